"""A run's tokenizer and model from its config: shared by training and by loading a trained run back.

The same functions rebuild the same model: a preset is randomly initialised from the run's seed (the
values do not depend on the mesh), a converted checkpoint is read from `model.checkpoint`, and LoRA
adapters are added on top. Only the trainable part is then taken from the run's checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from agentjax import sharding
from agentjax.configlib import ConfigError
from agentjax.util.errors import BadInputPolicy
from agentjax.util.storage import as_path
from agentjax.data.formats import read_conversations
from agentjax.data.templates import template_markers
from agentjax.data.tokenizer import SENTENCEPIECE_FILE, Tokenizer, copy_tokenizer, find_tokenizer, load_tokenizer, train_sentencepiece
from agentjax.model.checkpoint import abstract_model, restore_params
from agentjax.model.llama import Llama, LlamaConfig
from agentjax.model.lora import LoRAParam, add_lora
from agentjax.train.config import RunConfig

def prepare_tokenizer(cfg: RunConfig, run_dir: Path) -> Tokenizer:
    """The run's tokenizer, kept in the run directory: a copy of the configured one (its files under their standard
    names, each written atomically), or a sentencepiece model trained on the data."""
    if jax.process_index() == 0 and find_tokenizer(run_dir) is None:
        if cfg.tokenizer.path:
            copy_tokenizer(cfg.tokenizer.path, run_dir)
        else:
            train_sentencepiece(corpus_texts(cfg), cfg.tokenizer.train_vocab_size, run_dir / SENTENCEPIECE_FILE,
                                user_symbols=template_markers())
    if jax.process_count() > 1:  # every process, whatever it saw on disk
        multihost_utils.sync_global_devices("agentjax tokenizer ready")
    return load_tokenizer(run_dir)


def corpus_texts(cfg: RunConfig):
    """Every turn's text in the training sources (to train a tokenizer on)."""
    policy = BadInputPolicy(cfg.data.bad_input)
    for source in cfg.data.sources:
        for path in source.paths:
            for conv in read_conversations(path, source.format, bad_input=policy):
                yield from (t.content for t in conv.turns)


def resolve_model_config(cfg: RunConfig, tokenizer: Tokenizer) -> LlamaConfig:
    """The model config; a randomly initialised model takes the tokenizer's vocabulary size."""
    model_cfg = cfg.model.resolve()
    if cfg.model.preset and "vocab_size" not in cfg.model.overrides:
        model_cfg = model_cfg.replace(vocab_size=tokenizer.vocab_size)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {model_cfg.vocab_size}")
    return model_cfg


def trainable_filter(cfg: RunConfig):
    """What the optimizer trains: the adapters under LoRA, every parameter otherwise."""
    return LoRAParam if cfg.lora is not None else nnx.Param


def build_model(cfg: RunConfig, mesh, model_cfg: LlamaConfig, *, shapes_only: bool = False) -> Llama:
    """The model on its shardings: random init from a preset, or a converted checkpoint; LoRA added if asked.

    `shapes_only` allocates nothing: the model's shapes and logical axes (with its adapters under LoRA), for
    full fine-tuning whose every weight comes from a run checkpoint, or for compiling ahead of time.
    """
    if shapes_only:
        return nnx.eval_shape(lambda: _with_adapters(cfg, Llama(model_cfg, rngs=nnx.Rngs(params=cfg.seed))))
    if cfg.model.checkpoint:
        model = abstract_model(model_cfg)
        restore_params(as_path(cfg.model.checkpoint) / "params", model, mesh)
    else:
        model = sharding.create_sharded(lambda: Llama(model_cfg, rngs=nnx.Rngs(params=cfg.seed)), mesh)
    if cfg.lora is not None:
        _with_adapters(cfg, model)  # initialised eagerly, identically on every process
        adapters = nnx.state(model, LoRAParam)
        nnx.update(model, jax.tree.map(_place, adapters, sharding.state_shardings(adapters, mesh)))
    return model


def _with_adapters(cfg: RunConfig, model: Llama) -> Llama:
    """The model with the run's LoRA adapters added (in place), or as it is without LoRA."""
    return model if cfg.lora is None else add_lora(model, cfg.lora, seed=cfg.seed)


def _place(value, target) -> jax.Array:
    """A global array on `target` from a value every process holds in full (safe with several hosts)."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, target, lambda index: host[index])
