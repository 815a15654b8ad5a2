"""TPU slices by accelerator name, and their devices from libtpu's topology descriptions (no TPU needed).

`devices("v5e-16")` are the 16 devices of a v5litepod-16 as the compiler sees them, each with its process
(host) index, so a program lowered for them is the program a real slice would run. Usable HBM is the
amount the TPU compiler lets a program use (it refuses programs over it), not the nominal chip memory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass

from jax.experimental import topologies

from agentjax.configlib import ConfigError

GiB = 2**30
INSTALL_HINT = ('compiling for a TPU on this machine needs libtpu: pip install "jax[tpu]==$(python -c '
                '"import jax; print(jax.__version__)")" (or `pip install -e .[tpu]`)')


@dataclass(frozen=True)
class Slice:
    """One TPU slice: its topology description and the HBM a program may use on each device."""

    name: str  # the accelerator type, e.g. v5e-16 (Cloud TPU calls it v5litepod-16)
    topology: str  # libtpu topology name, e.g. "v5e:4x4"
    chip_config: str  # "megacore" fuses a v4/v5p chip's two TensorCores into one JAX device
    host_bounds: tuple[int, int, int]  # chips per host along each axis
    usable_hbm_gib: float  # per device, as the TPU compiler counts it


SLICES = {s.name: s for s in (
    Slice("v4-8", "v4:2x2x1", "megacore", (2, 2, 1), 32.0),
    Slice("v5e-1", "v5e:1x1", "default", (1, 1, 1), 15.75),
    Slice("v5e-4", "v5e:2x2", "default", (2, 2, 1), 15.75),
    Slice("v5e-8", "v5e:2x4", "default", (2, 4, 1), 15.75),
    Slice("v5e-16", "v5e:4x4", "default", (2, 2, 1), 15.75),
    Slice("v5p-8", "v5:2x2x1", "megacore", (2, 2, 1), 95.0),
    Slice("v5p-64", "v5:2x4x4", "megacore", (2, 2, 1), 95.0),
    Slice("v6e-1", "v6e:1x1", "default", (1, 1, 1), 31.25),
    Slice("v6e-8", "v6e:2x4", "default", (2, 4, 1), 31.25),
)}


def get_slice(name: str) -> Slice:
    if name not in SLICES:
        raise ConfigError(f"--topology: unknown slice {name!r}; known: {', '.join(SLICES)}")
    return SLICES[name]


def libtpu_installed() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def host_devices(tpu: Slice, devices: list) -> list:
    """The devices of one host, for a program each host runs alone (an evaluation): `devices` on a single-host
    slice, else the devices of one host's own topology (its chips per host). libtpu cannot compile for a subset of
    a larger slice's devices (v5e-16's first host holds device ids 0, 1, 4, 5: "unexpected device_id 5")."""
    if len({d.process_index for d in devices}) == 1:
        return devices
    generation, shape = tpu.topology.split(":")
    bounds = "x".join(str(b) for b in tpu.host_bounds[:len(shape.split("x"))])
    return slice_devices(dataclasses.replace(tpu, topology=f"{generation}:{bounds}"))


def slice_devices(tpu: Slice, num_slices: int = 1) -> list:
    """The devices of `num_slices` copies of the slice (multi-slice: joined over the data-center network)."""
    if not libtpu_installed():
        raise ConfigError(INSTALL_HINT)
    desc = topologies.get_topology_desc(platform="tpu", topology_name=tpu.topology, chip_config_name=tpu.chip_config,
                                        chips_per_host_bounds=tpu.host_bounds, num_slices=num_slices)
    return list(desc.devices)
