"""FLOP accounting for MFU (the model's FLOPs per token, chip peaks, a measured matmul peak), and compile
bookkeeping: counting compilations, and keeping compiled programs on disk between runs.

Per token, a forward pass costs 2 FLOPs per matmul parameter (the layers' projections and the output
projection; the input embedding is a gather) plus causal attention: QK^T and PV over on average
half the context, 2 * 2 * n_layers * n_heads * head_dim * seq_len / 2. Training costs 3x the forward
(backward = 2x forward); rematerialisation's recomputation is not counted, as is the convention.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

# Dense bf16 peak FLOP/s per chip, from the vendors' published specifications.
CHIP_PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,  # SXM, dense
}


def matmul_params(cfg) -> int:
    """Parameters that take part in matmuls: every layer projection and the output projection."""
    return cfg.n_layers * layer_matmul_params(cfg) + cfg.vocab_size * cfg.dim


def layer_matmul_params(cfg) -> int:
    """One decoder block's projection parameters."""
    return cfg.dim * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads) + 3 * cfg.dim * cfg.mlp_dim


def layer_flops_per_token(cfg, seq_len: int) -> float:
    """FLOPs of one token's forward pass through one block: its projections and causal attention (2 matmuls x
    2 FLOPs x seq_len/2 positions on average)."""
    return 2 * layer_matmul_params(cfg) + 2 * cfg.n_heads * cfg.head_dim * seq_len


def forward_flops_per_token(cfg, seq_len: int) -> float:
    """FLOPs of one token's forward pass in a causal sequence of `seq_len` tokens."""
    return cfg.n_layers * layer_flops_per_token(cfg, seq_len) + 2 * cfg.vocab_size * cfg.dim


def train_flops_per_token(cfg, seq_len: int, frozen_base: bool = False, frozen_layers: int = 0) -> float:
    """Forward + backward. The backward costs 2x the forward of what it runs through (activation and weight
    gradients), 1x when the base is frozen (LoRA: no weight gradients, and the adapters' own FLOPs are
    negligible); it does not run through the first `frozen_layers` blocks at all."""
    forward = forward_flops_per_token(cfg, seq_len)
    backward_through = forward - frozen_layers * layer_flops_per_token(cfg, seq_len)
    return forward + (1 if frozen_base else 2) * backward_through


def device_peak_flops(device=None) -> float | None:
    """The published peak of this accelerator, or None when unknown (e.g. CPU: measure it instead)."""
    kind = (device or jax.devices()[0]).device_kind
    return next((v for k, v in CHIP_PEAK_FLOPS.items() if kind.startswith(k)), None)


def median_seconds(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measured_matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 7) -> float:
    """FLOP/s of a large square matmul on the default device, its fastest of `repeats`: the practical peak on a
    CPU (a median reads low when other threads, e.g. a starting input pipeline, share the cores)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


class CompileCounter:
    """Counts XLA backend compilations while active (JAX reports each one as a monitoring event)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        self.seconds = 0.0

    def _listen(self, event: str, duration: float, **_) -> None:
        if event == self.EVENT:
            self.count += 1
            self.seconds += duration

    def __enter__(self) -> "CompileCounter":
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


def enable_compilation_cache(default: Path = Path("~/.cache/agentjax/xla")) -> str | None:
    """Keep compiled programs on disk (JAX's persistent cache), so a rerun, or a second evaluation of the same
    shapes (the quickstart's "after" reuses the "before" one's decode programs), loads them instead of compiling.

    The directory is $JAX_COMPILATION_CACHE_DIR when set, else `default`; AGENTJAX_COMPILATION_CACHE=off
    leaves the cache off. Only programs that took over a second to compile are kept, 4 GB at most (least
    recently used go first). Returns the directory.
    """
    if os.environ.get("AGENTJAX_COMPILATION_CACHE", "").lower() in ("off", "0", "false"):
        return None
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(default.expanduser())
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_compilation_cache_max_size", 4 << 30)
    return path
