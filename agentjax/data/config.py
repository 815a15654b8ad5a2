"""Typed configs of the data layer: sources and their mixture, template, packing, conditioning (loaded by configlib)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentjax.configlib import ConfigError, ConfigSection
from agentjax.data.formats import FORMATS
from agentjax.data.templates import AUTO, TEMPLATES
from agentjax.util.storage import as_path, glob_files


@dataclass
class SourceConfig(ConfigSection):
    """One data source: file(s) in one format, its sampling weight, metadata to assign and examples to keep."""

    path: str | list[str] = ""  # one path or a list; globs and $VARS are expanded
    format: str = "agentjax"
    weight: float = 1.0  # sampling probability, normalised over sources (e.g. AgentTuning eta: 0.2 agent / 0.8 chat)
    name: str = ""  # defaults to the first file's stem
    task: str = ""  # assigned to every conversation when set
    method: str = ""  # assigned to every conversation when set (else the reader's guess)
    keep_outcome: Literal["any", "success", "failure"] = "any"  # e.g. NAT positives and negatives as two sources
    outcome: Literal["success", "failure"] | None = None  # sets every record's outcome (files of one kind, as NAT releases)
    keep_methods: list[str] = field(default_factory=list)  # e.g. FireAct's method mix; empty keeps all
    limit: int | None = None  # keep only the first N conversations (quick jobs)

    def validate(self) -> None:
        """Called by configlib: a known format, a positive weight, a sane limit and method."""
        if not self.path:
            raise ConfigError("path: required")
        if self.format not in FORMATS:
            raise ConfigError(f"format: {self.format!r} is not one of {sorted(FORMATS)}")
        if not self.weight > 0:
            raise ConfigError(f"weight: must be > 0, got {self.weight}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be >= 1, got {self.limit}")
        if self.method not in ("", "react", "cot", "reflexion", "chat"):
            raise ConfigError(f"method: {self.method!r} is not one of react, cot, reflexion, chat")

    @property
    def paths(self) -> list[Path]:
        """The files (local, or in a bucket: gs://), with `~`, `$VARS` and globs expanded, sorted per pattern."""
        out = []
        for pattern in [self.path] if isinstance(self.path, str) else self.path:
            pattern = os.path.expanduser(os.path.expandvars(pattern))
            matches = glob_files(pattern) if glob.has_magic(pattern) else [as_path(pattern)]
            if not matches:
                raise ConfigError(f"path: {pattern!r} matches no file")
            out += matches
        return out

    @property
    def display_name(self) -> str:
        """The source's name in counters and stats."""
        return self.name or self.paths[0].stem


@dataclass
class ConditioningConfig(ConfigSection):
    """NAT outcome conditioning: a label on the question turn saying how the trajectory ended."""

    mode: Literal["none", "binary", "graded"] = "none"
    placement: Literal["prefix", "suffix"] = "prefix"
    positive: str = "[Outcome: success]"
    negative: str = "[Outcome: failure]"
    levels: list[str] = field(default_factory=lambda: ["[Correct]", "[Mostly Correct]", "[Mostly Incorrect]", "[Totally Incorrect]"])
    f1_thresholds: list[float] = field(default_factory=lambda: [1.0, 0.4])  # NAT's cut-offs: F1 >= 1 -> level 0, >= 0.4 -> 1, > 0 -> 2, else 3

    def validate(self) -> None:
        """Called by configlib: four levels, ordered thresholds, distinct binary labels."""
        if len(self.levels) != 4:
            raise ConfigError(f"levels: expected 4 labels, got {len(self.levels)}")
        if len(self.f1_thresholds) != 2 or not self.f1_thresholds[0] >= self.f1_thresholds[1] > 0:
            raise ConfigError(f"f1_thresholds: expected [high, low] with high >= low > 0, got {self.f1_thresholds}")
        if self.positive == self.negative:
            raise ConfigError("positive and negative labels must differ")


@dataclass
class DataConfig(ConfigSection):
    """Everything that decides the training batches: same config + same seed -> same batches."""

    sources: list[SourceConfig] = field(default_factory=list)
    template: str = "react"
    template_options: dict[str, Any] = field(default_factory=dict)
    seq_len: int = 2048
    overlong: Literal["drop", "truncate", "error"] = "drop"  # examples longer than a row
    bad_input: Literal["raise", "skip"] = "raise"  # bad records and examples with nothing to train
    shuffle: bool = True
    pack_window: int = 1024  # examples packed together (best fit); also what a restore recomputes
    epochs: int | None = None  # None: sample the mixture forever; N: every source N times, then stop
    seed: int = 0
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    parallel_windows: int = 2  # windows tokenized and packed concurrently by tf.data
    prefetch_batches: int = 2  # packed windows kept ready beyond those being built (a window is many batches)

    def validate(self) -> None:
        """Called by configlib: at least one source, distinct source names, a known template, sane sizes."""
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        names = [s.display_name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"sources: two sources are named {dupes[0]!r}; give them distinct `name`s")
        if self.template not in TEMPLATES and self.template != AUTO:
            raise ConfigError(f"template: {self.template!r} is not one of {sorted(TEMPLATES)} or {AUTO!r}")
        for key, minimum in (("seq_len", 8), ("pack_window", 1), ("parallel_windows", 1), ("prefetch_batches", 0)):
            if getattr(self, key) < minimum:
                raise ConfigError(f"{key}: must be >= {minimum}, got {getattr(self, key)}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs: must be >= 1 or null, got {self.epochs}")
