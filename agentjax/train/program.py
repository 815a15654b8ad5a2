"""One model's training computation on one mesh: the optimizer, the state's layout, and the jitted steps.

The trainer drives it with real data and checkpoints; benchmarks/train_throughput.py times the same
compiled step on synthetic batches.
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from agentjax import sharding
from agentjax.data.packing import BATCH_FIELDS
from agentjax.train.config import TrainConfig
from agentjax.train.optim import decay_mask, frozen_layers_mask, learning_rate_schedule, make_optimizer
from agentjax.train.state import TrainState, abstract_state, make_init, shardings_of
from agentjax.train.step import make_eval_step, make_train_step


class TrainProgram:
    """`train_step(state, frozen, batch) -> (state, metrics)` (state donated) and `eval_step(params, frozen, batch)`,
    jitted with explicit shardings; `init(params)` makes the first state, `abstract` is the target of restores."""

    def __init__(self, graphdef, params: nnx.State, frozen: dict, mesh, cfg: TrainConfig, seed: int, dropout: bool):
        self.mesh = mesh
        keep = frozen_layers_mask(params, cfg.frozen_layers) if cfg.frozen_layers else None
        self.optimizer = make_optimizer(cfg.optimizer, cfg.steps, decay_mask(params), keep)
        self.schedule = learning_rate_schedule(cfg.optimizer, cfg.steps)
        self.params_shardings = nnx.to_pure_dict(sharding.state_shardings(params, mesh))
        self._init = make_init(self.optimizer, seed)
        self.abstract: TrainState = abstract_state(self._init, nnx.to_pure_dict(params), self.params_shardings, mesh)
        self.state_shardings = shardings_of(self.abstract)
        self.global_batch = cfg.global_batch
        frozen_shardings = jax.tree.map(lambda x: x.sharding, frozen)
        replicated = NamedSharding(mesh, PartitionSpec())
        step = make_train_step(graphdef, self.optimizer, cfg.micro_batches, cfg.z_loss, dropout, cfg.frozen_layers)
        self.train_step = jax.jit(step, in_shardings=(self.state_shardings, frozen_shardings, self.batch_shardings()),
                                  out_shardings=(self.state_shardings, replicated), donate_argnums=0)
        self.eval_step = jax.jit(make_eval_step(graphdef), in_shardings=(
            self.params_shardings, frozen_shardings, self.batch_shardings()), out_shardings=replicated)

    def init(self, params: dict) -> TrainState:
        """The state before the first step, built on its shardings; `params` (a pure dict) is consumed."""
        return jax.jit(self._init, out_shardings=self.state_shardings, donate_argnums=0)(params)

    def batch_shardings(self) -> dict:
        """Rows split over the data-parallel axes (data, fsdp); any row length."""
        spec = sharding.logical_to_spec(("act_batch",), (self.global_batch,), self.mesh)
        return dict.fromkeys(BATCH_FIELDS, NamedSharding(self.mesh, spec))
