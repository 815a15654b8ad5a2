"""Helpers shared by the training tests (not a test module): toy conversations, a run config, subprocess runs."""

from __future__ import annotations

import atexit
import functools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from agentjax.configlib import load
from agentjax.data.conversation import Conversation, Turn
from agentjax.data.native import write_conversations
from agentjax.train.config import RunConfig


def session_folder(prefix: str) -> str:
    """A temporary folder removed when this test session ends."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def share_compilations() -> None:
    """One XLA compilation cache for this test session and its child processes: every Trainer builds the same
    few programs (a second compile of the tiny train step on 8 devices costs ~5 s, a cache hit ~0.3 s)."""
    import jax

    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = session_folder("agentjax-test-xla-")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


share_compilations()

WORDS = "alpha beta gamma delta search paris london capital river mountain answer finish".split()


def write_toy_data(path: Path, n: int, seed: int = 0) -> Path:
    """`n` question/answer conversations in the native format; the answer is a fixed function of the question."""
    rng = random.Random(seed)
    convs = []
    for i in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 24)))
        convs.append(Conversation(turns=(Turn("user", f"Question {i}: {question}?"),
                                         Turn("assistant", f"Answer: {answer}", train=True)), id=str(i)))
    write_conversations(path, convs)
    return path


@functools.lru_cache(maxsize=None)
def toy_files() -> tuple[Path, Path]:
    """(data, tokenizer): 64 toy conversations and a tokenizer trained on them, made once per session."""
    from agentjax.data.templates import template_markers
    from agentjax.data.tokenizer import train_sentencepiece
    from agentjax.train.build import corpus_texts

    folder = Path(session_folder("agentjax-train-test-"))
    data = write_toy_data(folder / "toy.jsonl", 64)
    cfg = load(RunConfig, None, [f"data.sources=[{{path: {data}, format: agentjax}}]"])
    train_sentencepiece(corpus_texts(cfg), 512, folder / "tokenizer.model", user_symbols=template_markers())
    return data, folder / "tokenizer.model"


def base_config(data: Path, tokenizer: Path, out: Path) -> dict:
    """A tiny run: 2-layer d=64 Llama, rows of 64 tokens, 8 rows a step.

    The schedule is constant so that runs of different lengths compile the same program (a cosine's
    length is a constant in it) and share it through the compilation cache.
    """
    return {
        "model": {"preset": "tiny"},
        "tokenizer": {"path": str(tokenizer)},
        "data": {"sources": [{"path": str(data), "format": "agentjax"}], "seq_len": 64, "pack_window": 32},
        "train": {"steps": 12, "global_batch": 8, "log_every": 1, "checkpoint_every": 4,
                  "optimizer": {"learning_rate": 1e-2, "schedule": "constant", "warmup_steps": 2}},
        "output_dir": str(out),
    }


def interruptible_config(folder: Path, steps: int) -> Path:
    """The tiny run for `steps` steps, checkpointed every 4 steps keeping 2, written to `folder`/run.yaml (its
    output_dir `folder`/reference): long enough to be killed part-way and resumed."""
    data, tokenizer = toy_files()
    config = base_config(data, tokenizer, folder / "reference")
    config["train"].update(steps=steps, checkpoint_every=4, keep_checkpoints=2)
    return write_config(folder / "run.yaml", config)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_config(config_file: Path, *overrides: str) -> RunConfig:
    return load(RunConfig, config_file, list(overrides))


def agentjax_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agentjax.cli", *args]


def subprocess_env(devices: int = 8, **extra: str) -> dict[str, str]:
    """The test environment for a child JAX process with `devices` fake CPU devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a child process whose output goes to `log` (read it when something fails)."""
    return subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def run_two_processes(command: list[str], folder: Path, devices: int) -> list[Path]:
    """Run `command` as processes 0 and 1 of a 2-process JAX job on 127.0.0.1 (each with `devices` CPU devices);
    both must exit 0. Returns their logs."""
    port = free_port()
    logs = [folder / f"process{i}.log" for i in (0, 1)]
    processes = [start(command, logs[i], subprocess_env(
        devices=devices, AGENTJAX_COORDINATOR=f"127.0.0.1:{port}", AGENTJAX_NUM_PROCESSES="2", AGENTJAX_PROCESS_ID=str(i)))
        for i in (0, 1)]
    for process, log in zip(processes, logs):
        assert process.wait(timeout=600) == 0, log.read_text()
    return logs


def flat_params(tree) -> dict[str, np.ndarray]:
    """{"a/b/c": array} of a nested dict of arrays, fetched to host."""
    import jax

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(jax.device_get(v)) for path, v in flat}


def abstract_like(tree):
    """ShapeDtypeStructs with the shardings of a tree of arrays (a restore target)."""
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
