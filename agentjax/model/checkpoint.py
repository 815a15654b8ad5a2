"""A model directory: `config.json` (LlamaConfig) + `params/` (orbax), restored onto a mesh.

This is what `agentjax convert hf-to-agentjax` writes and what training starts from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from agentjax import sharding
from agentjax.configlib import ConfigError, from_dict, to_dict
from agentjax.util.atomic import atomic_directory
from agentjax.util.records import read_json
from agentjax.util.storage import absolute, as_path
from agentjax.model.llama import Llama, LlamaConfig

FORMAT = "agentjax-llama-v1"


def read_config(model_dir: str | Path, **overrides) -> LlamaConfig:
    """The LlamaConfig stored in a model directory, with some fields changed (e.g. dtype)."""
    path = as_path(model_dir) / "config.json"
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
    restored = ocp.StandardCheckpointer().restore(absolute(params_dir), target)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)


def load_checkpoint(model_dir: str | Path, mesh=None, **overrides) -> Llama:
    """The model stored in `model_dir`, its parameters sharded over `mesh` (default: all devices, fsdp)."""
    cfg = read_config(model_dir, **overrides)
    mesh = mesh or sharding.make_mesh()
    model = abstract_model(cfg)
    restore_params(as_path(model_dir) / "params", model, mesh)
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
