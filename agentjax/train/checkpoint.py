"""Training checkpoints with orbax: the train state and the data position, saved together, restored exactly.

Orbax writes each step into `<step>.orbax-checkpoint-tmp*` and renames it when complete, so a
checkpoint cut off half-way is never listed, let alone restored; a training run deletes such
leftovers when it starts. Async saves overlap with the next steps: the save call returns once the
arrays are copied to host memory, so the donated state can be overwritten by the next step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from agentjax.configlib import ConfigError
from agentjax.train.state import TrainState
from agentjax.util.storage import absolute



class Checkpoints:
    """The `checkpoints/` directory of a run: save every N steps, keep the last K, restore the latest.

    `read_only` opens a run's checkpoints for evaluation or export, possibly while it still trains.
    """

    def __init__(self, run_dir: str | Path, keep: int = 1, asynchronous: bool = True, read_only: bool = False):
        self.directory = absolute(run_dir) / "checkpoints"
        if read_only:
            if not self.directory.is_dir():
                raise FileNotFoundError(f"{run_dir}: no checkpoints/ directory; is this a training run directory?")
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0, max_to_keep=None)
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                                   create=True, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
            "state": ocp.PyTreeCheckpointHandler(type_handler_registry=_array_handlers()),
            "data": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        """The steps of the finished checkpoints kept, in order."""
        return sorted(self.manager.all_steps())

    def save(self, state: TrainState, data_state: dict[str, Any]) -> None:
        step = int(jax.device_get(state.step))
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state._asdict()),
                                                        data=ocp.args.JsonSave(data_state)), force=True)

    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The state at `step` placed on `abstract_state`'s shardings (any mesh), and the data position.

        A checkpoint of another shape (the config's model or LoRA changed) is a ConfigError: resuming is refused."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=_restore_args(abstract_state._asdict()), data=ocp.args.JsonRestore()))
        except ValueError as e:
            raise ConfigError(f"{self.directory}: cannot resume from step {step}, the checkpoint does not fit this "
                              f"config's model ({e}). Resume with the run's own config.yaml, or choose another "
                              "output_dir") from None
        return TrainState(**restored["state"]), restored["data"]

    def restore_params(self, step: int, abstract_params) -> Any:
        """Only the trainable parameters at `step`, on `abstract_params`' shardings (for evaluation and export)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=_restore_args({"params": abstract_params}, partial=True)))
        return restored["state"]["params"]

    def params_metadata(self, step: int) -> Any:
        """The tree of stored parameters at `step` (shapes and dtypes, read from metadata only)."""
        return self.manager.item_metadata(step)["state"]["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _restore_args(target, partial: bool = False) -> ocp.args.PyTreeRestore:
    """Restore the arrays of `target` (ShapeDtypeStructs with shardings) onto those shardings."""
    return ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                  partial_restore=partial)


def _array_handlers() -> ocp.type_handlers.TypeHandlerRegistry:
    """Every leaf of the train state is a jax.Array. Replica-parallel saving splits a replicated array across
    its replicas, compiling a slice per array shape and device on the first save (seconds on CPU even
    for a tiny model): only worth it for large arrays, so smaller ones are written whole by one replica."""
    handler = ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=64 << 20)
    return ocp.type_handlers.create_type_handler_registry((jax.Array, handler))
