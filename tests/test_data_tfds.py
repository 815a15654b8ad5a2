"""TFDS: the local trajectory builder round-trips Conversations exactly, per split; GSM8K reads from a prepared copy."""

from __future__ import annotations

import json

import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.text.gsm8k import gsm8k as tfds_gsm8k

from agentjax.data.conversation import Outcome
from agentjax.data.formats import read_conversations
from agentjax.data.native import write_conversations
from agentjax.tasks.gsm8k import GSM8K
from agentjax.data.tfds_builder import TrajectoryConfig, gsm8k_records, prepare_trajectories, read_prepared_trajectories

tfds.disable_progress_bar()


def test_trajectory_builder_round_trips_conversations_per_split(shared_data, tmp_path):
    """Conversations written natively, prepared as TFDS splits, read back equal (floats and meta included);
    preparing again reuses the versioned copy."""
    train = list(read_conversations(shared_data / "fixtures/nat_sample.json", "nat"))
    train[0] = train[0].replace(outcome=Outcome(success=True, reward=0.1, f1=0.3), meta={"gold": "84", "tags": [1, 2]})
    validation = list(read_conversations(shared_data / "fixtures/agentflan_sample.jsonl", "agentflan"))
    write_conversations(tmp_path / "train.jsonl", train)
    write_conversations(tmp_path / "validation.jsonl", validation)
    config = TrajectoryConfig(name="fixtures", splits={"train": [tmp_path / "train.jsonl"], "validation": [tmp_path / "validation.jsonl"]})
    builder = prepare_trajectories(tmp_path / "tfds", config)
    assert builder.info.version == "1.0.0" and builder.info.splits["train"].num_examples == 2
    by_origin = lambda convs: sorted(convs, key=lambda c: c.origin)  # noqa: E731
    assert by_origin(read_prepared_trajectories(builder, "train")) == by_origin(train)
    assert by_origin(read_prepared_trajectories(builder, "validation")) == by_origin(validation)
    again = prepare_trajectories(tmp_path / "tfds", config)
    assert again.data_dir == builder.data_dir


class _LocalGsm8k(tfds_gsm8k.Gsm8k, skip_registration=True):
    """TFDS's own gsm8k builder, fed from local files instead of downloads, to make a prepared copy for the test."""

    name = "gsm8k"
    files: dict = {}

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(path) for split, path in self.files.items()}


def test_gsm8k_reads_a_prepared_tfds_copy_without_downloading(tmp_path):
    """gsm8k_records reads what `tfds build gsm8k` would leave on disk; an unprepared directory is a clear error."""
    rows = [{"question": "A box holds 12 pens. How many pens in 7 boxes?", "answer": "12*7=84\n#### 84"},
            {"question": "What is 3 plus 4?", "answer": "3+4=7\n#### 7"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _LocalGsm8k.files = {"test": tmp_path / "test.jsonl"}
    _LocalGsm8k(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    got = list(gsm8k_records(tmp_path / "tfds", "test"))
    assert sorted(got, key=lambda r: r["question"]) == sorted(rows, key=lambda r: r["question"])
    assert sorted(q.answers[0] for q in GSM8K().from_records(got)) == ["7", "84"]  # what the gsm8k task consumes
    with pytest.raises(FileNotFoundError, match="tfds build gsm8k"):
        next(gsm8k_records(tmp_path / "empty", "test"))
