"""One pass over every source, as the pipeline packs it: counts, tokens, supervised share, drops, packing vs padding."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from agentjax.data.config import DataConfig
from agentjax.data.sources import source_counts
from agentjax.data.stream import RowStream
from agentjax.data.tokenizer import Tokenizer


def epoch_stats(config: DataConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """Stats of one epoch (each source once, whatever `epochs` says), packed exactly as training packs it.

    `padding_efficiency` is what one example per row would give: tokens / (examples * seq_len).
    """
    stream = RowStream.from_config(dataclasses.replace(config, epochs=1), tokenizer)
    counts: Counter = source_counts(stream.sources)
    for window in stream.windows():
        counts.update(stream.build(window)[1])
    seq_len = config.seq_len
    tokens, examples, rows = counts["tokens"], counts["examples"], counts["rows"]
    per_source = {}
    for s in stream.sources:
        prefix = f"source/{s.name}/"
        mine = {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix)}
        mine["supervised_share"] = mine.get("supervised", 0) / mine["tokens"] if mine.get("tokens") else 0.0
        per_source[s.name] = dict(sorted(mine.items()))
    return {
        "seq_len": seq_len,
        "template": config.template,
        "examples": examples,
        "tokens": tokens,
        "supervised": counts["supervised"],
        "supervised_share": counts["supervised"] / tokens if tokens else 0.0,
        "rows": rows,
        "packing_efficiency": tokens / (rows * seq_len) if rows else 0.0,
        "padding_efficiency": tokens / (examples * seq_len) if examples else 0.0,
        "truncated": counts["truncated"],
        "dropped": {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("dropped/")},
        "bad_input": {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("bad_input/")},
        "sources": per_source,
    }
