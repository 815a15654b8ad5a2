"""Hugging Face Llama <-> agentjax model directories, streamed tensor by tensor.

One table (`TENSORS`) says which HF tensor is which agentjax parameter. HF linear weights are
[out, in]; agentjax kernels are [*in, *out] (heads split out), so a conversion is a transpose and a
reshape. The RoPE layout is the same half-split one, so no permutation is needed. Each parameter
is built on its sharding by reading its HF tensors from memory-mapped files, so host memory never
holds the model twice; the output appears only when complete.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from flax import nnx

from agentjax import sharding
from agentjax.configlib import ConfigError, from_dict
from agentjax.util.atomic import atomic_directory, check_new_output
from agentjax.util.errors import DataError
from agentjax.util.records import read_json
from agentjax.model import checkpoint
from agentjax.model.llama import Llama, LlamaConfig
from agentjax.model.safetensors_io import FLOAT_DTYPES, SafetensorsFile, write_safetensors

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")
SHARD_BYTES = 4 * 2**30  # HF-side shard size when writing


@dataclass(frozen=True)
class TensorMap:
    """One HF tensor name pattern and the agentjax parameter it fills."""

    hf_name: str  # `{i}` stands for the layer index
    path: tuple[str, ...]  # path in the agentjax parameter tree
    n_in: int | None  # dense kernels: how many leading dims are inputs; None: copied as is

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf_name


TENSORS = (
    TensorMap("model.embed_tokens.weight", ("embed",), None),
    TensorMap("model.layers.{i}.input_layernorm.weight", ("layers", "input_norm", "scale"), None),
    TensorMap("model.layers.{i}.self_attn.q_proj.weight", ("layers", "attn", "q_proj", "kernel"), 1),
    TensorMap("model.layers.{i}.self_attn.k_proj.weight", ("layers", "attn", "k_proj", "kernel"), 1),
    TensorMap("model.layers.{i}.self_attn.v_proj.weight", ("layers", "attn", "v_proj", "kernel"), 1),
    TensorMap("model.layers.{i}.self_attn.o_proj.weight", ("layers", "attn", "o_proj", "kernel"), 2),
    TensorMap("model.layers.{i}.post_attention_layernorm.weight", ("layers", "post_attn_norm", "scale"), None),
    TensorMap("model.layers.{i}.mlp.gate_proj.weight", ("layers", "mlp", "gate_proj", "kernel"), 1),
    TensorMap("model.layers.{i}.mlp.up_proj.weight", ("layers", "mlp", "up_proj", "kernel"), 1),
    TensorMap("model.layers.{i}.mlp.down_proj.weight", ("layers", "mlp", "down_proj", "kernel"), 1),
    TensorMap("model.norm.weight", ("norm", "scale"), None),
    TensorMap("lm_head.weight", ("lm_head", "kernel"), 1),
)
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved


def to_agentjax(w: np.ndarray, shape: tuple[int, ...], n_in: int | None) -> np.ndarray:
    """HF [out, in] weight -> agentjax kernel [*in, *out] of `shape` (copies pass through)."""
    return w if n_in is None else w.T.reshape(shape)


def to_hf(k: np.ndarray, n_in: int | None) -> np.ndarray:
    """agentjax kernel [*in, *out] -> HF [out, in] weight."""
    return k if n_in is None else k.reshape(math.prod(k.shape[:n_in]), -1).T


# -- config.json ------------------------------------------------------------------------------


def config_from_hf(hf: dict, where: str, dtype: str | None = None) -> LlamaConfig:
    """A LlamaConfig from an HF config.json (transformers 4.x `rope_theta/rope_scaling` or 5.x `rope_parameters`)."""
    if hf.get("model_type") != "llama":
        raise ConfigError(f"{where}: field 'model_type' is {hf.get('model_type')!r}; only 'llama' models convert")
    archs = hf.get("architectures") or ["LlamaForCausalLM"]
    if "LlamaForCausalLM" not in archs:
        raise ConfigError(f"{where}: field 'architectures' is {archs}; expected LlamaForCausalLM")
    for field, ok in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if hf.get(field, ok) != ok:
            raise ConfigError(f"{where}: field {field!r} is {hf[field]!r}; agentjax's Llama needs {ok!r}")
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if field not in hf:
            raise ConfigError(f"{where}: missing field {field!r}")
    rope = dict(hf.get("rope_parameters") or {})
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = rope if rope.get("rope_type", "default") != "default" else dict(hf.get("rope_scaling") or {})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        rope_scaling = None
    elif kind == "llama3":
        rope_scaling = dict(kind="llama3", factor=scaling["factor"], low_freq_factor=scaling["low_freq_factor"],
                            high_freq_factor=scaling["high_freq_factor"],
                            original_max_position=scaling["original_max_position_embeddings"])
    elif kind == "linear":
        rope_scaling = dict(kind="linear", factor=scaling["factor"])
    else:
        raise ConfigError(f"{where}: rope type {kind!r} is not supported (default, linear, llama3 are)")
    hf_dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    heads = hf["num_attention_heads"]
    return from_dict(LlamaConfig, dict(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, mlp_dim=hf["intermediate_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=theta, rope_scaling=rope_scaling,
        max_seq_len=hf.get("max_position_embeddings", 4096), tie_embeddings=hf.get("tie_word_embeddings", False),
        param_dtype=dtype or ("float32" if hf_dtype == "float32" else "bfloat16"),
    ), where)


def config_to_hf(cfg: LlamaConfig, dtype: str) -> dict:
    """An HF config.json for this model, readable by transformers 4.x and 5.x."""
    hf = dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=cfg.vocab_size, hidden_size=cfg.dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, intermediate_size=cfg.mlp_dim, rms_norm_eps=cfg.norm_eps, hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len, tie_word_embeddings=cfg.tie_embeddings, attention_bias=False,
        mlp_bias=False, rope_theta=cfg.rope_theta, torch_dtype=dtype,
    )
    s = cfg.rope_scaling
    if s is not None and s.kind == "llama3":
        hf["rope_scaling"] = dict(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                                  high_freq_factor=s.high_freq_factor, original_max_position_embeddings=s.original_max_position)
    elif s is not None:
        hf["rope_scaling"] = dict(rope_type="linear", factor=s.factor)
    return hf


# -- HF -> agentjax ---------------------------------------------------------------------------


class HFCheckpoint:
    """The tensors of an HF model directory (single file, or sharded with an index), by name."""

    def __init__(self, hf_dir: Path):
        index = hf_dir / "model.safetensors.index.json"
        if index.exists():
            weight_map = read_json(index)["weight_map"]
            files = {f: SafetensorsFile(hf_dir / f) for f in sorted(set(weight_map.values()))}
            self.where = {name: files[f] for name, f in weight_map.items()}
        else:
            paths = sorted(hf_dir.glob("*.safetensors"))
            if not paths:
                raise FileNotFoundError(f"{hf_dir}: no *.safetensors files (PyTorch .bin checkpoints are not read)")
            self.where = {name: f for f in map(SafetensorsFile, paths) for name in f.keys()}

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in self.where:
            raise KeyError(f"missing tensor {name!r} in the Hugging Face checkpoint")
        if (dtype := self.where[name].dtype(name)) not in FLOAT_DTYPES:  # same bytes as F32, but not a weight
            raise DataError(str(self.where[name].path), "bad_dtype",
                            f"tensor {name!r} is declared {dtype}; model weights are {'/'.join(sorted(FLOAT_DTYPES))}")
        array = self.where[name].get(name)
        if shape is not None and array.shape != tuple(shape):
            raise ValueError(f"{self.where[name].path}: tensor {name!r} has shape {array.shape}, expected {tuple(shape)}")
        return array


def _hf_shape(m: TensorMap, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The HF shape of one layer's tensor for an agentjax parameter of `shape`."""
    shape = shape[1:] if m.per_layer else shape
    return shape if m.n_in is None else (math.prod(shape[m.n_in:]), math.prod(shape[:m.n_in]))


def expected_tensors(cfg: LlamaConfig) -> list[TensorMap]:
    """The tensors a model of this config has (no output projection when embeddings are tied)."""
    return [m for m in TENSORS if not (cfg.tie_embeddings and m.path[0] == "lm_head")]


def hf_to_agentjax(hf_dir: str | Path, out_dir: str | Path, dtype: str | None = None, mesh=None) -> LlamaConfig:
    """Convert an HF Llama directory into an agentjax model directory; returns the model config."""
    hf_dir = Path(hf_dir)
    check_new_output(out_dir)
    config_path = hf_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{hf_dir}: no config.json")
    cfg = config_from_hf(read_json(config_path), str(config_path), dtype)
    source = HFCheckpoint(hf_dir)
    known = {m.hf_name.format(i=i) for m in expected_tensors(cfg) for i in range(cfg.n_layers)}
    unexpected = sorted(n for n in source.where if n not in known and not n.endswith(IGNORED_SUFFIXES))
    if unexpected:
        raise ValueError(f"{hf_dir}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all); "
                         "is this a plain LlamaForCausalLM checkpoint?")
    write_converted(source, cfg, out_dir, mesh, extra_files=[hf_dir / f for f in TOKENIZER_FILES if (hf_dir / f).exists()])
    return cfg


def write_converted(source, cfg: LlamaConfig, out_dir: str | Path, mesh=None, extra_files=(), texts=None) -> None:
    """Write an agentjax model directory from `source.get(hf_name, hf_shape)` (HF-layout tensors), parameter by
    parameter on its sharding, atomically, with `extra_files` copied and `texts` ({name: text}) written beside it."""
    mesh = mesh or sharding.make_mesh()
    model = checkpoint.abstract_model(cfg)
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    for m in expected_tensors(cfg):
        variable = flat[m.path]
        target = sharding.named_sharding(variable.get_metadata()["axes"], variable.shape, mesh)
        variable.set_value(_build(source, m, variable.shape, np.dtype(variable.dtype), target, cfg.n_layers))
    nnx.update(model, state)
    checkpoint.save_checkpoint(model, out_dir, extra_files=list(extra_files), texts=texts)


def _build(source: HFCheckpoint, m: TensorMap, shape, dtype, target, n_layers: int) -> jax.Array:
    """One agentjax parameter on its sharding; each device's shard reads only the tensors it needs."""
    hf_shape = _hf_shape(m, shape)
    layer_shape = shape[1:] if m.per_layer else shape

    def read(layer: int | None) -> np.ndarray:
        name = m.hf_name.format(i=layer) if m.per_layer else m.hf_name
        return to_agentjax(source.get(name, hf_shape), layer_shape, m.n_in).astype(dtype)

    def shard(index) -> np.ndarray:
        if not m.per_layer:
            return read(None)[index]
        layers = range(n_layers)[index[0]]
        return np.stack([read(i)[index[1:]] for i in layers])

    return jax.make_array_from_callback(tuple(shape), target, shard)


# -- agentjax -> HF ---------------------------------------------------------------------------


def agentjax_to_hf(model: Llama, hf_dir: str | Path, dtype: str | None = None, config_fields: dict | None = None,
                   write_extra: Callable[[Path], None] | None = None) -> None:
    """Write an HF Llama directory (sharded safetensors + index + config.json, plus `config_fields` such as the
    bos/eos ids) from an agentjax model, atomically; `write_extra(tmp_dir)` adds files (tokenizer, adapters)."""
    check_new_output(hf_dir)
    cfg = model.config
    dtype = dtype or cfg.param_dtype
    np_dtype = np.dtype(jax.numpy.dtype(dtype))
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    tensors = []
    for m in expected_tensors(cfg):
        value = flat[m.path][...]
        for layer in range(cfg.n_layers) if m.per_layer else [None]:
            name = m.hf_name.format(i=layer) if m.per_layer else m.hf_name
            produce = (lambda v=value, l=layer, n=m.n_in: to_hf(np.asarray(v if l is None else v[l]), n))
            tensors.append((name, _hf_shape(m, value.shape), np_dtype, produce))
    shards = _group_by_size(tensors, SHARD_BYTES)
    with atomic_directory(hf_dir) as tmp:
        weight_map = {}
        for n, group in enumerate(shards, 1):
            fname = "model.safetensors" if len(shards) == 1 else f"model-{n:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(tmp / fname, group, metadata={"format": "pt"})
            weight_map.update({t[0]: fname for t in group})
        total = sum(math.prod(t[1]) * np_dtype.itemsize for t in tensors)
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        hf_config = {**config_to_hf(cfg, dtype), **(config_fields or {})}
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        if write_extra is not None:
            write_extra(tmp)


def _group_by_size(tensors, limit: int) -> list[list]:
    groups, size = [[]], 0
    for t in tensors:
        nbytes = math.prod(t[1]) * np.dtype(t[2]).itemsize
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += nbytes
    return groups
