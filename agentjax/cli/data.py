"""`agentjax data inspect|stats`: show rendered examples with trained spans marked; count what training will see."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from agentjax.configlib import ConfigError, apply_overrides, expand_env, from_dict, read_yaml
from agentjax.util.atomic import atomic_write
from agentjax.data.config import DataConfig
from agentjax.util.errors import BadInputPolicy
from agentjax.data.formats import read_conversations
from agentjax.data.sources import load_source
from agentjax.data.stats import epoch_stats
from agentjax.data.templates import get_template, template_markers
from agentjax.data.tokenizer import SENTENCEPIECE_FILE, Tokenizer, load_tokenizer, train_sentencepiece

TRAINED_OPEN, TRAINED_CLOSE = "\u27e6", "\u27e7"  # ⟦ trained text ⟧


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`inspect` and `stats`, each with --config, tokenizer choice and key=value overrides."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    inspect_ = actions.add_parser("inspect", help="print rendered examples with the trained spans marked")
    inspect_.add_argument("-n", "--num", type=int, default=2, help="how many examples")
    inspect_.add_argument("--source", help="the source to show (default: the first)")
    stats = actions.add_parser("stats", help="count one epoch: per source, tokens, supervised share, drops, packing")
    stats.add_argument("--json", dest="json_out", help="also write the stats to this JSON file")
    for p in (inspect_, stats):
        p.add_argument("--config", required=True, help="YAML with a DataConfig, or a recipe whose `data:` section is one")
        p.add_argument("--tokenizer", help="a tokenizer file (.model, tokenizer.json) or model directory; "
                       "default: train a small sentencepiece model on the data")
        p.add_argument("--vocab-size", type=int, default=1024, help="vocabulary of the tokenizer trained on the fly")
        p.add_argument("overrides", nargs="*", default=[], help="key=value changes to the data config, e.g. seq_len=4096")


def run(args: argparse.Namespace) -> int:
    """Load the config and tokenizer, then inspect or count."""
    config = load_data_config(args.config, args.overrides)
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else _tokenizer_from_data(config, args.vocab_size)
    if args.action == "inspect":
        inspect(config, tokenizer, args.num, args.source)
    else:
        stats = epoch_stats(config, tokenizer)
        print(format_stats(stats))
        if args.json_out:
            with atomic_write(args.json_out) as f:
                json.dump(stats, f, indent=2)
            print(f"wrote {args.json_out}")
    return 0


def load_data_config(path: str, overrides: list[str]) -> DataConfig:
    """A DataConfig from a YAML file (the whole file, or its `data:` section; includes merged) plus `key=value` overrides."""
    data = read_yaml(path)
    section = data["data"] if isinstance(data.get("data"), dict) else data
    try:
        return from_dict(DataConfig, expand_env(apply_overrides(section, overrides)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def inspect(config: DataConfig, tokenizer: Tokenizer, num: int, source_name: str | None) -> None:
    """Print the first `num` examples of a source as training renders them, trained spans in ⟦ ⟧."""
    template = get_template(config.template, tokenizer, **config.template_options)
    names = [s.display_name for s in config.sources]
    if source_name is not None and source_name not in names:
        raise ConfigError(f"--source {source_name!r}: not one of {names}")
    source = config.sources[names.index(source_name) if source_name else 0]
    loaded = load_source(source, template, config.conditioning, config.bad_input)
    print(f"source {loaded.name}: {len(loaded.conversations)} conversations; template {template.name}; "
          f"trained text in {TRAINED_OPEN} {TRAINED_CLOSE}; stop strings {list(template.stop_strings)}")
    print(tokenizer.describe())
    for conv in loaded.conversations[:num]:
        encoded = template.encode(conv)
        fits = "fits" if len(encoded.ids) - 1 <= config.seq_len else f"too long for seq_len {config.seq_len} ({config.overlong})"
        print(f"\n=== {conv.origin}  task={conv.task or '-'} method={conv.method or '-'} outcome={conv.outcome}")
        print(f"--- {len(encoded.ids)} tokens, {encoded.num_supervised} trained, {fits}")
        print(mark_trained(encoded.ids, encoded.weights, tokenizer))


def mark_trained(ids: np.ndarray, weights: np.ndarray, tokenizer: Tokenizer) -> str:
    """Decoded text with trained runs wrapped in ⟦ ⟧ and control tokens (BOS, EOS, chat markers) shown by name."""
    parts, run, trained = [], b"", False

    def flush():
        text = run.decode("utf-8", errors="replace")
        parts.append(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained and text else text)

    for token, weight in zip(ids.tolist(), weights.tolist()):
        if bool(weight) != trained:
            flush()
            run, trained = b"", bool(weight)
        run += tokenizer.token_bytes(token) or tokenizer.piece(token).encode()
    flush()
    return "".join(parts)


def format_stats(stats: dict) -> str:
    """A readable table of `epoch_stats` output."""
    lines = [f"{'source':28} {'convs':>7} {'examples':>8} {'tokens':>10} {'supervised':>10} {'share':>6} {'trunc':>6} {'dropped':>8} {'bad':>5}"]
    for name, s in stats["sources"].items():
        dropped = sum(v for k, v in s.items() if k.startswith("dropped/"))
        bad = sum(v for k, v in s.items() if k.startswith("bad_input/"))
        lines.append(f"{name:28} {s.get('conversations', 0):>7} {s.get('examples', 0):>8} {s.get('tokens', 0):>10} "
                     f"{s.get('supervised', 0):>10} {s['supervised_share']:>6.1%} {s.get('truncated', 0):>6} {dropped:>8} {bad:>5}")
    lines.append(f"seq_len {stats['seq_len']}: {stats['examples']} examples in {stats['rows']} rows; "
                 f"packing_efficiency {stats['packing_efficiency']:.2%} (plain padding {stats['padding_efficiency']:.2%}); "
                 f"supervised share {stats['supervised_share']:.1%}")
    lines.append(f"dropped {stats['dropped'] or 'none'}; truncated {stats['truncated']}; bad input {stats['bad_input'] or 'none'}")
    return "\n".join(lines)


def _tokenizer_from_data(config: DataConfig, vocab_size: int) -> Tokenizer:
    """A small tokenizer trained on the configured sources' text (for looking at data without a model at hand)."""
    policy = BadInputPolicy(config.bad_input)  # bad records are counted by the stats themselves
    texts = [t.content for s in config.sources for p in s.paths
             for c in read_conversations(p, s.format, bad_input=policy) for t in c.turns]
    print(f"(tokenizer: sentencepiece trained on the fly, vocab {vocab_size}; pass --tokenizer for your model's)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        return train_sentencepiece(texts, vocab_size, Path(tmp) / SENTENCEPIECE_FILE, user_symbols=template_markers())
