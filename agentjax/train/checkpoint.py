"""Training checkpoints with orbax: the train state and the data position, saved together, restored exactly.

Orbax writes each step to a temporary directory and renames it when complete, so a checkpoint cut
off half-way is never listed, let alone restored. Async saves overlap with the next steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from agentjax.train.step import TrainState


class Checkpoints:
    """The `checkpoints/` directory of a run: save every N steps, keep the last K, restore the latest."""

    def __init__(self, run_dir: str | Path, keep: int, asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                               create=True)
        self.directory = Path(run_dir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, data_state: dict[str, Any]) -> None:
        step = int(jax.device_get(state.step))
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state._asdict()),
                                                        data=ocp.args.JsonSave(data_state)), force=True)

    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The state at `step` placed on `abstract_state`'s shardings, and the data position."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state._asdict()), data=ocp.args.JsonRestore()))
        return TrainState(**restored["state"]), restored["data"]

    def restore_params(self, step: int, abstract_params) -> Any:
        """Only the trainable parameters at `step` (for evaluation and export)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item={"params": abstract_params},
                                         restore_args=jax.tree.map(_restore_arg, {"params": abstract_params}),
                                         partial_restore=True)))
        return restored["state"]["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _restore_arg(abstract: jax.ShapeDtypeStruct) -> ocp.ArrayRestoreArgs:
    return ocp.ArrayRestoreArgs(sharding=abstract.sharding, global_shape=abstract.shape, dtype=abstract.dtype)
