"""Up-front checks of a run against the machine and the files, before anything slow, with messages that say what to change."""

from __future__ import annotations

import jax

from agentjax.configlib import ConfigError
from agentjax.data.templates import get_template
from agentjax.data.tokenizer import HF_FILE, SENTENCEPIECE_FILE, find_tokenizer, load_tokenizer
from agentjax.train.config import RunConfig
from agentjax.util.storage import as_path


def validate_run(cfg: RunConfig, mesh) -> None:
    """Files exist, the templates can use the tokenizer, every device gets whole rows of every micro-batch, rows fit
    the model."""
    check_files(cfg)
    check_templates(cfg)
    check_layout(cfg, mesh, jax.process_count(), cfg.model.resolve().max_seq_len)


def check_layout(cfg: RunConfig, mesh, processes: int, max_len: int) -> None:
    """Every device gets whole rows of every micro-batch, every process whole rows, rows fit `max_len`."""
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.global_batch % (batch_ways * cfg.train.micro_batches):
        raise ConfigError(
            f"train.global_batch ({cfg.train.global_batch}) must be divisible by mesh data*fsdp ({batch_ways}) "
            f"x train.micro_batches ({cfg.train.micro_batches}) so that every device gets whole rows")
    if cfg.train.global_batch % processes:
        raise ConfigError(f"train.global_batch ({cfg.train.global_batch}) must be divisible by the "
                          f"{processes} processes")
    for section, data in (("data", cfg.data), ("eval_data", cfg.eval_data)):
        if data is not None and data.seq_len > max_len:
            raise ConfigError(f"{section}.seq_len ({data.seq_len}) exceeds the model's max_seq_len ({max_len}); "
                              "lower it or set model.overrides.max_seq_len")


def check_files(cfg: RunConfig) -> None:
    """The tokenizer and every data file named by the config exist (globs must match something)."""
    if cfg.tokenizer.path and find_tokenizer(cfg.tokenizer.path) is None:
        problem = f"holds neither {HF_FILE} nor {SENTENCEPIECE_FILE}" if as_path(cfg.tokenizer.path).is_dir() else "does not exist"
        raise ConfigError(f"tokenizer.path: {cfg.tokenizer.path} {problem}")
    for section, data in (("data", cfg.data), ("eval_data", cfg.eval_data)):
        for i, source in enumerate(data.sources if data is not None else ()):
            try:
                paths = source.paths
            except ConfigError as e:  # "path: 'x*' matches no file"
                raise ConfigError(f"{section}.sources[{i}].{e}") from None
            for path in paths:
                if not path.is_file():
                    raise ConfigError(f"{section}.sources[{i}].path: {path} does not exist")


def check_templates(cfg: RunConfig) -> None:
    """Each data section's template builds over the configured tokenizer (its control tokens exist; `auto` finds a
    chat template the renderer reproduces), so a tokenizer the template cannot use fails before the run directory
    is made. A tokenizer trained on the data is made for the templates and needs no check."""
    if not cfg.tokenizer.path:
        return
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    for section, data in (("data", cfg.data), ("eval_data", cfg.eval_data)):
        if data is not None:
            try:
                get_template(data.template, tokenizer, **data.template_options)
            except ValueError as e:
                raise ConfigError(f"{section}.template: {e}") from None
