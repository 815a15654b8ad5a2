"""The device mesh, the one table mapping logical axes to mesh axes, and sharded model creation.

Model code names logical axes only (`embed`, `heads`, ...); this module alone knows the mesh axes
`data` (pure data parallel), `fsdp` (data parallel with sharded parameters) and `tensor` (model
parallel). A dimension that its mesh axes do not divide evenly is replicated instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Callable

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from agentjax.configlib import ConfigError, ConfigSection

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes, in order of preference. Parameters use the plain names; activations
# the `act_` names, so that a batch sharded over fsdp never asks fsdp to also split its width.
LOGICAL_AXIS_RULES: dict[str, tuple[str, ...]] = {
    # parameters
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "head_dim": (),
    "layers": (),
    "norm": (),
    "lora_rank": (),
    # activations
    "act_batch": ("data", "fsdp"),
    "length": (),
    "cache_len": (),
    "act_embed": (),
    "act_heads": ("tensor",),
    "act_kv_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
}


@dataclass(frozen=True)
class MeshConfig(ConfigSection):
    """Sizes of the mesh axes; one of them may be -1 to take the remaining devices."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    num_devices: int = -1  # use only the first N devices (-1: all), e.g. a 1-device evaluation on a CPU host

    def shape(self, n_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        if sizes.count(-1) > 1:
            raise ConfigError("mesh: at most one of data/fsdp/tensor may be -1")
        known = math.prod(s for s in sizes if s != -1)
        if any(s == 0 or s < -1 for s in sizes):
            raise ConfigError(f"mesh: sizes must be positive or -1, got {sizes}")
        if -1 in sizes:
            if n_devices % known:
                raise ConfigError(f"mesh: {n_devices} devices are not divisible by data*fsdp*tensor={known}")
            sizes[sizes.index(-1)] = n_devices // known
        if math.prod(sizes) != n_devices:
            raise ConfigError(
                f"mesh: data*fsdp*tensor = {math.prod(sizes)} but there are {n_devices} devices; "
                "set one axis to -1 to use them all"
            )
        return tuple(sizes)


def make_mesh(cfg: MeshConfig = MeshConfig(), devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices (of every host), laid out for fast collectives."""
    devices = jax.devices() if devices is None else devices
    if cfg.num_devices != -1:
        if not 1 <= cfg.num_devices <= len(devices):
            raise ConfigError(f"mesh.num_devices: {cfg.num_devices} is not between 1 and the {len(devices)} devices")
        devices = devices[: cfg.num_devices]
    shape = cfg.shape(len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(axes: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """The PartitionSpec for an array with these logical axes on this mesh (rules table above)."""
    used: set[str] = set()
    spec = []
    for name, dim in zip(axes, shape):
        if name is not None and name not in LOGICAL_AXIS_RULES:
            raise KeyError(f"logical axis {name!r} has no rule in agentjax.sharding.LOGICAL_AXIS_RULES")
        chosen = []
        for mesh_axis in LOGICAL_AXIS_RULES.get(name, ()) if name else ():
            size = mesh.shape[mesh_axis]
            if mesh_axis in used or size == 1:
                continue
            if dim % (math.prod(mesh.shape[a] for a in chosen) * size) == 0:
                chosen.append(mesh_axis)
        used.update(chosen)
        spec.append(tuple(chosen) if len(chosen) > 1 else (chosen[0] if chosen else None))
    return PartitionSpec(*spec)


def named_sharding(axes, shape, mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(tuple(axes), tuple(shape), mesh))


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def state_shardings(state, mesh: Mesh):
    """A tree like `state` (an nnx.State) holding each variable's NamedSharding, from its `axes`."""

    def sharding_of(v: nnx.Variable):
        axes = v.get_metadata().get("axes")
        if axes is None:  # scalars and counters: replicated
            return v.replace(NamedSharding(mesh, PartitionSpec()))
        return v.replace(named_sharding(axes, v.shape, mesh))

    return jax.tree.map(sharding_of, state, is_leaf=_is_variable)


def create_sharded(make_module: Callable[[], nnx.Module], mesh: Mesh) -> nnx.Module:
    """Build a module directly on its shardings: shapes from eval_shape, then a jitted init."""
    graphdef, abstract = nnx.split(nnx.eval_shape(make_module))
    shardings = state_shardings(abstract, mesh)
    with activate(mesh):
        state = jax.jit(lambda: nnx.split(make_module())[1], out_shardings=shardings)()
    return nnx.merge(graphdef, state)


# -- activation constraints -------------------------------------------------------------------

_ACTIVE_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("agentjax_mesh", default=None)


def mesh_of(state) -> Mesh | None:
    """The mesh a module's or state's arrays are laid out on (None when they carry no named sharding)."""
    for leaf in jax.tree.leaves(state):
        if isinstance(getattr(leaf, "sharding", None), NamedSharding):
            return leaf.sharding.mesh
    return None


@contextlib.contextmanager
def activate(mesh: Mesh):
    """Within this block, traced model code constrains activations to the mesh via `constrain`."""
    token = _ACTIVE_MESH.set(mesh)
    try:
        yield mesh
    finally:
        _ACTIVE_MESH.reset(token)


def active_mesh() -> Mesh | None:
    """The mesh `activate` set for traced model code, if any."""
    return _ACTIVE_MESH.get()


def constrain(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """Shard an activation by logical axes when a mesh is active; otherwise leave it alone."""
    mesh = _ACTIVE_MESH.get()
    if mesh is None or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, named_sharding(axes, x.shape, mesh))


def per_device(fn: Callable, args: tuple, in_axes: tuple, out_axes: tuple[str | None, ...]):
    """fn on each device's own shards of `args` (logical axes per argument), for a kernel SPMD cannot partition
    (Pallas); the output is assembled by `out_axes`. Without an active multi-device mesh, plainly fn(*args)."""
    mesh = _ACTIVE_MESH.get()
    if mesh is None or mesh.size == 1:
        return fn(*args)
    in_specs = tuple(logical_to_spec(tuple(axes), x.shape, mesh) for axes, x in zip(in_axes, args))
    out_spec = logical_to_spec(tuple(out_axes), args[0].shape, mesh)  # the output is shaped like the first argument
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_spec, check_vma=False)(*args)


# -- multi-host --------------------------------------------------------------------------------


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join the processes of a multi-host job (TPU pods detect all three arguments themselves).

    Explicit arguments (or AGENTJAX_COORDINATOR / AGENTJAX_NUM_PROCESSES / AGENTJAX_PROCESS_ID)
    serve CPU clusters and the loopback tests. A single process without them does nothing.
    """
    coordinator = coordinator or os.environ.get("AGENTJAX_COORDINATOR")
    num_processes = num_processes or _env_int("AGENTJAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("AGENTJAX_PROCESS_ID")
    if coordinator:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    elif _on_tpu_pod():
        jax.distributed.initialize()
    else:
        return
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _on_tpu_pod() -> bool:
    """A TPU VM that is one worker of several (the TPU runtime sets these for every worker)."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hosts


def host_local_to_global(batch: dict[str, np.ndarray], mesh: Mesh, axes=("act_batch", "length")) -> dict[str, jax.Array]:
    """Assemble global arrays from each host's rows (its process's share of the global batch)."""
    out = {}
    for key, local in batch.items():
        global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
        sharding = named_sharding(axes[: local.ndim], global_shape, mesh)
        out[key] = jax.make_array_from_process_local_data(sharding, local, global_shape)
    return out


def gather_json(value) -> list:
    """Every process's JSON-able `value`, in process order, on every process (a collective: all must call it)."""
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    if jax.process_count() == 1:
        return [value]
    lengths = multihost_utils.process_allgather(np.array([data.size], np.int64)).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded).reshape(len(lengths), -1)
    return [json.loads(row[:n].tobytes()) for row, n in zip(rows, lengths)]


def broadcast_json(value):
    """Process 0's JSON-able `value` on every process (the others' `value` is ignored; all must call it)."""
    return gather_json(value if jax.process_index() == 0 else None)[0]
