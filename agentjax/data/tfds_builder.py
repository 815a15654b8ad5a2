"""TensorFlow Datasets: a versioned builder for trajectory files on local disk, and GSM8K read from a prepared TFDS copy.

Preparing writes TFRecords once (versioned, one split per file list); reading needs no internet and
gives back the same Conversations, metadata included.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from agentjax.data.conversation import Conversation, Outcome, Turn
from agentjax.data.formats import parser_for, read_conversations


class TrajectoryConfig(tfds.core.BuilderConfig):
    """Which local files make which split, and their format (any reader's name, e.g. `fireact` or `agentjax`)."""

    def __init__(self, *, name: str, splits: Mapping[str, Sequence[str | Path]], fmt: str = "agentjax", description: str = ""):
        parser_for(fmt)  # fail early on an unknown format
        super().__init__(name=name, description=description or f"{fmt} trajectories")
        self.splits = {split: [str(p) for p in paths] for split, paths in splits.items()}
        self.fmt = fmt


class AgentTrajectories(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Conversations (turns with role, content, train flag; source, task, method, outcome, id, origin, meta)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Conversations with per-turn train flags and outcome metadata."}
    code_path = None  # nothing to download, so no checksum files beside the code (whose lookup fails in editable installs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
            "id": text(), "source": text(), "task": text(), "method": text(), "origin": text(),
            "outcome": text(), "meta": text(),  # JSON (TFRecord floats are float32; JSON keeps them exact)
            "turns": tfds.features.Sequence({"role": text(), "content": text(), "train": tfds.features.Scalar(np.bool_)}),
        }))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(paths) for split, paths in self.builder_config.splits.items()}

    def _generate_examples(self, paths: list[str]):
        for path in paths:
            for conv in read_conversations(path, self.builder_config.fmt):
                yield conv.origin, _to_example(conv)


def prepare_trajectories(data_dir: str | Path, config: TrajectoryConfig) -> AgentTrajectories:
    """Build (once; a prepared version is reused) and return the builder for `config` under `data_dir`."""
    builder = AgentTrajectories(config=config, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


def read_prepared_trajectories(builder: tfds.core.DatasetBuilder, split: str) -> Iterator[Conversation]:
    """The Conversations of a prepared split, in TFDS's deterministic order (not the files')."""
    for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
        yield _from_example(example)


def gsm8k_records(data_dir: str | Path, split: str = "test") -> Iterator[dict[str, str]]:
    """GSM8K `{question, answer}` records from a TFDS copy prepared under `data_dir` (never downloads).

    Feed them to `agentjax.tasks.gsm8k.GSM8K().from_records`. Prepare once where there is internet:
    `tfds build gsm8k --data_dir DIR`, then copy DIR.
    """
    builder = tfds.builder("gsm8k", data_dir=str(data_dir))
    if not builder.is_prepared():
        raise FileNotFoundError(f"{data_dir}: no prepared TFDS gsm8k {builder.version} here; run "
                                f"`tfds build gsm8k --data_dir {data_dir}` on a machine with internet and copy it over")
    for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
        yield {"question": example["question"].decode("utf-8"), "answer": example["answer"].decode("utf-8")}


def _to_example(conv: Conversation) -> dict[str, Any]:
    """A Conversation as a TFDS example (outcome and meta as JSON text, lossless)."""
    return {
        "id": conv.id, "source": conv.source, "task": conv.task, "method": conv.method, "origin": conv.origin,
        "outcome": json.dumps(dataclasses.asdict(conv.outcome)), "meta": json.dumps(conv.meta, sort_keys=True),
        "turns": {"role": [t.role for t in conv.turns], "content": [t.content for t in conv.turns],
                  "train": [t.train for t in conv.turns]},
    }


def _from_example(example: Mapping[str, Any]) -> Conversation:
    """The Conversation stored in a decoded TFDS example."""
    def text(key: str) -> str:
        return example[key].decode("utf-8")

    turns = example["turns"]
    return Conversation(
        turns=tuple(Turn(r.decode("utf-8"), c.decode("utf-8"), bool(t)) for r, c, t in zip(turns["role"], turns["content"], turns["train"])),
        source=text("source"), task=text("task"), method=text("method"),
        outcome=Outcome(**json.loads(text("outcome"))),
        id=text("id"), origin=text("origin"), meta=json.loads(text("meta")),
    )
