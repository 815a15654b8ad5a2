"""The train state (pure dicts of arrays) and where each of its leaves lives on the mesh.

Shardings are explicit: parameters from their logical axes, each optimizer moment from the parameter
it tracks (matched by key path), counters and the RNG replicated. Left to the compiler, optax's
`zeros_like` moments come out replicated, which would cost every device the full Adam state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec


class TrainState(NamedTuple):
    """Everything that changes during training (frozen weights live outside, e.g. the base under LoRA)."""

    step: jax.Array  # int32 scalar: optimizer updates done
    params: Any  # trainable parameters, a pure dict
    opt_state: Any
    rng: jax.Array  # raw uint32 key data, for dropout


def make_init(optimizer: optax.GradientTransformation, seed: int) -> Callable[[Any], TrainState]:
    """init(params) -> the state before the first step."""

    def init(params) -> TrainState:
        key = jax.random.key_data(jax.random.key(seed))
        return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), key)

    return init


def abstract_state(init: Callable[[Any], TrainState], params, params_shardings, mesh) -> TrainState:
    """The state's shapes, dtypes and shardings, without allocating it: the target of init and of restores.

    Moments take their parameter's sharding (optax nests the params tree in its states, so a moment's
    key path ends with its parameter's); step counters and the RNG are replicated.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    shapes = jax.eval_shape(init, params)
    by_path = {path: (sharding, leaf.shape) for (path, sharding), leaf in zip(
        jax.tree_util.tree_flatten_with_path(params_shardings)[0], jax.tree.leaves(shapes.params))}

    def follow_param(path, leaf):
        for start in range(len(path)):
            found = by_path.get(path[start:])
            if found is not None and found[1] == leaf.shape:
                return found[0]
        return replicated

    shardings = TrainState(replicated, params_shardings,
                           jax.tree_util.tree_map_with_path(follow_param, shapes.opt_state), replicated)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def shardings_of(abstract: TrainState) -> TrainState:
    return jax.tree.map(lambda x: x.sharding, abstract)
