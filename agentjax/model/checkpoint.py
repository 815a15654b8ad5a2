"""A model directory: `config.json` (LlamaConfig) + `params/` (orbax), restored onto a mesh.

This is what `agentjax convert hf-to-agentjax` writes and what training starts from.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from agentjax import sharding
from agentjax.configlib import ConfigError, from_dict, to_dict
from agentjax.util.atomic import DIRECTORY_MODE
from agentjax.util.records import read_json
from agentjax.model.llama import Llama, LlamaConfig

FORMAT = "agentjax-llama-v1"
log = logging.getLogger(__name__)


def read_config(model_dir: str | Path, **overrides) -> LlamaConfig:
    """The LlamaConfig stored in a model directory, with some fields changed (e.g. dtype)."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{model_dir}: not an agentjax model directory (no config.json); "
                          "convert one with `agentjax convert hf-to-agentjax HF_DIR OUT_DIR`")
    data = read_json(path)
    if data.pop("format", None) != FORMAT:
        raise ConfigError(f"{path}: field 'format' is not {FORMAT!r}; convert Hugging Face models with "
                          "`agentjax convert hf-to-agentjax`")
    return from_dict(LlamaConfig, {**data, **overrides}, str(path))


def abstract_model(cfg: LlamaConfig) -> Llama:
    return nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))


def restore_params(params_dir: str | Path, model: Llama, mesh) -> None:
    """Fill an (abstract) model's parameters in place from an orbax params directory, sharded on `mesh`."""
    state = nnx.state(model, nnx.Param)
    shardings = sharding.state_shardings(state, mesh)
    target = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                          nnx.to_pure_dict(state), nnx.to_pure_dict(shardings))
    restored = ocp.StandardCheckpointer().restore(Path(params_dir).absolute(), target)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)


def load_checkpoint(model_dir: str | Path, mesh=None, **overrides) -> Llama:
    """The model stored in `model_dir`, its parameters sharded over `mesh` (default: all devices, fsdp)."""
    cfg = read_config(model_dir, **overrides)
    mesh = mesh or sharding.make_mesh()
    model = abstract_model(cfg)
    restore_params(Path(model_dir) / "params", model, mesh)
    return model


def save_checkpoint(model: Llama, out_dir: str | Path, extra_files: list[Path] = (), texts: dict[str, str] | None = None) -> None:
    """Write a model directory atomically: everything goes to a temporary sibling, renamed at the end.
    `extra_files` are copied into it and `texts` ({file name: text}) written into it (e.g. the tokenizer)."""
    with atomic_directory(out_dir) as tmp:
        save_params(nnx.state(model, nnx.Param), tmp / "params")
        write_config(model.config, tmp)
        for f in extra_files:
            shutil.copy(f, tmp / Path(f).name)
        for name, text in (texts or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")


def save_params(state: nnx.State, params_dir: Path) -> None:
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(Path(params_dir).absolute(), nnx.to_pure_dict(state))
    ckptr.wait_until_finished()


def write_config(cfg: LlamaConfig, directory: Path) -> None:
    (Path(directory) / "config.json").write_text(json.dumps({"format": FORMAT, **to_dict(cfg)}, indent=2) + "\n")


@contextmanager
def atomic_directory(out_dir: str | Path):
    """Yield a temporary directory beside `out_dir` that becomes `out_dir` only if the block succeeds.

    The temporary name carries the writer's process id, so one left behind by a killed writer is recognised (its
    process is gone) and removed by the next writer of the same `out_dir`.
    """
    out_dir = Path(out_dir)
    check_new_output(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out_dir.name}.partial-"
    for left in out_dir.parent.glob(f"{glob.escape(prefix)}*"):
        pid = left.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            log.warning("removing %s, left behind by a writer that was killed", left)
            shutil.rmtree(left, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out_dir.parent))
    try:
        tmp.chmod(DIRECTORY_MODE)  # mkdtemp makes it 0700: a converted model would be private to its writer
        yield tmp
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_new_output(out_dir: str | Path) -> None:
    """FileExistsError unless `out_dir` is free: checked before any slow work, so a taken name fails at once."""
    if Path(out_dir).exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new output directory or remove it")


def _running(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
