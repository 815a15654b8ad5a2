"""The deterministic row stream, without TensorFlow: mixture windows -> rendered examples -> best-fit packed rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from agentjax.data.config import DataConfig
from agentjax.data.conversation import Conversation
from agentjax.util.errors import DataError
from agentjax.data.mixture import Mixture, RngStream
from agentjax.data.packing import best_fit_pack, layout_rows
from agentjax.data.sources import LoadedSource, load_source
from agentjax.data.templates import Template, get_template
from agentjax.data.tokenizer import Tokenizer


@dataclass(frozen=True)
class Window:
    """One packing window: its index, the per-source draws before it, and its `(source, example)` picks."""

    index: int
    draws: tuple[int, ...]
    items: np.ndarray


class RowStream:
    """Windows of `pack_window` examples, each rendered, length-checked and packed into rows on its own.

    A window depends only on (seed, its index, the draws before it), which is what makes exact resume cheap.
    """

    @classmethod
    def from_config(cls, config: DataConfig, tokenizer: Tokenizer) -> "RowStream":
        """Load every configured source (bad input raises or is counted) and set up the stream over them."""
        template = get_template(config.template, tokenizer, **config.template_options)
        return cls([load_source(s, template, config.conditioning, config.bad_input) for s in config.sources], template, config)

    def __init__(self, sources: list[LoadedSource], template: Template, config: DataConfig):
        self.sources, self.template, self.config = sources, template, config
        self.mixture = Mixture([len(s.conversations) for s in sources], [s.weight for s in sources],
                               config.seed, config.shuffle, config.epochs)

    def windows(self, start: int = 0, draws: tuple[int, ...] | None = None) -> Iterator[Window]:
        """The plan from window `start` on (cheap: integers only); ends when a finite mixture is used up."""
        draws = tuple(self.mixture.start() if draws is None else draws)
        index = start
        while not self.mixture.finished(list(draws)):
            items, after = self.mixture.window(index, list(draws), self.config.pack_window)
            yield Window(index, draws, items)
            index, draws = index + 1, tuple(after)

    def build(self, window: Window) -> tuple[dict[str, np.ndarray], Counter]:
        """Rows `[R, seq_len]` of the window (shuffled when configured) and what was counted on the way."""
        cfg, seq_len = self.config, self.config.seq_len
        counts: Counter = Counter()
        examples = []
        for source_index, example_index in window.items:
            source = self.sources[source_index]
            conv = without_untrained_tail(source.conversations[example_index], self.template)

            def count(key: str, n: int = 1) -> None:  # totals and per source
                counts[key] += n
                counts[f"source/{source.name}/{key}"] += n

            encoded = self.template.encode(conv)
            ids, weights = encoded.ids, encoded.weights
            if not weights[1:].any():
                if cfg.bad_input == "raise":
                    raise DataError(conv.origin, "nothing_to_train", "renders to no supervised token")
                count("dropped/nothing_to_train")
                continue
            if len(ids) - 1 > seq_len:
                if cfg.overlong == "error":
                    raise DataError(conv.origin, "too_long", f"{len(ids)} tokens do not fit seq_len {seq_len} (+1); "
                                    "set overlong to drop or truncate")
                if cfg.overlong == "drop":
                    count("dropped/too_long")
                    continue
                ids, weights = ids[: seq_len + 1], weights[: seq_len + 1]
                if not weights[1:].any():
                    count("dropped/nothing_left_after_truncation")
                    continue
                count("truncated")
            examples.append((ids, weights))
            count("examples")
            count("tokens", len(ids) - 1)
            count("supervised", int(weights[1:].sum()))
        rows = best_fit_pack([len(ids) - 1 for ids, _ in examples], seq_len)
        if cfg.shuffle:
            np.random.default_rng([cfg.seed, window.index, RngStream.ROW_SHUFFLE]).shuffle(rows)
        counts["rows"] += len(rows)
        return layout_rows(examples, rows, seq_len, self.template.tokenizer.pad_id), counts


def without_untrained_tail(conv: Conversation, template: Template) -> Conversation:
    """Drop the turns after the last trained one: they cannot change the loss, only cost compute (e.g. FireAct's reward line)."""
    last = max((i for i, t in enumerate(conv.turns) if template.trained(t)), default=len(conv.turns) - 1)
    return conv if last == len(conv.turns) - 1 else conv.replace(turns=conv.turns[: last + 1])
