"""The tf.data pipeline: packed rows keep examples whole and apart, every example once per epoch, same seed same
batches, exact resume from a small JSON state, host shares, and loud failures (file:line) instead of silent ones."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from data_support import FIREACT

from agentjax.configlib import from_dict
from agentjax.data.config import DataConfig
from agentjax.util.errors import DataError
from agentjax.data.pipeline import Pipeline
from agentjax.data.stats import epoch_stats
from agentjax.data.stream import without_untrained_tail
from agentjax.data.templates import get_template

BATCH = 2


def make_config(shared_data, **changes) -> DataConfig:
    base = {
        "sources": [
            {"path": str(shared_data / FIREACT / "hotpotqa.jsonl"), "format": "fireact", "weight": 0.6, "limit": 120},
            {"path": str(shared_data / "fixtures/agentinstruct_sample.jsonl"), "format": "agentinstruct", "weight": 0.2},
            {"path": str(shared_data / "fixtures/sharegpt_sample.json"), "format": "sharegpt", "weight": 0.2},
        ],
        "seq_len": 2048, "pack_window": 48, "epochs": 1, "seed": 5,
    }
    return from_dict(DataConfig, {**base, **changes})


@pytest.fixture(scope="module")
def config(shared_data):
    return make_config(shared_data)


@pytest.fixture(scope="module")
def epoch(config, tok):
    """All batches of one epoch and the pipeline that made them."""
    pipeline = Pipeline(config, tok, BATCH)
    return list(pipeline), pipeline


def segments(batch):
    """Yield (ids, weights) of every packed example, checking the row layout on the way."""
    for r in range(len(batch["inputs"])):
        seg = batch["segment_ids"][r]
        used = int((seg > 0).sum())
        assert (seg[used:] == 0).all() and not batch["weights"][r, used:].any()  # padding only at the end
        starts = np.flatnonzero(np.diff(np.concatenate([[0], seg[:used]])) != 0)
        assert seg[starts].tolist() == list(range(1, len(starts) + 1))  # segments 1, 2, ... contiguous
        for s, e in zip(starts, list(starts[1:]) + [used]):
            assert batch["positions"][r, s:e].tolist() == list(range(e - s))  # restart per segment
            assert batch["targets"][r, s : e - 1].tolist() == batch["inputs"][r, s + 1 : e].tolist()  # next token, same segment
            ids = tuple(batch["inputs"][r, s:e].tolist()) + (int(batch["targets"][r, e - 1]),)
            yield ids, tuple(batch["weights"][r, s:e].tolist())


def test_an_epoch_yields_every_example_exactly_once_packed_apart(epoch, config, tok):
    """Over one epoch the multiset of packed examples (ids and weights) equals the multiset of rendered inputs."""
    batches, pipeline = epoch
    assert all(b[k].shape == (BATCH, config.seq_len) for b in batches for k in b)
    template = get_template(config.template, tok)
    expected = Counter()
    for source in pipeline.sources:
        for conv in source.conversations:
            enc = template.encode(without_untrained_tail(conv, template))
            expected[(tuple(enc.ids.tolist()), tuple(enc.weights[1:].tolist()))] += 1
    got = Counter(seg for b in batches for seg in segments(b))
    assert pipeline.counters.get("dropped/too_long", 0) == 0
    assert got == expected and sum(got.values()) == 120 + 2 + 2


def test_counters_match_the_batches_and_the_stats_command(epoch, config, tok):
    """Counters agree with the batches (tokens, supervised, packing) and with `data stats` over the same epoch."""
    batches, pipeline = epoch
    c = pipeline.counters
    tokens = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    assert c["consumed_tokens"] == c["tokens"] == tokens
    assert c["consumed_supervised"] == c["supervised"] == int(sum(b["weights"].sum() for b in batches))
    assert c["packing_efficiency"] == pytest.approx(tokens / (len(batches) * BATCH * config.seq_len))
    stats = epoch_stats(config, tok)
    assert (stats["tokens"], stats["examples"], stats["supervised"]) == (tokens, c["examples"], c["supervised"])
    assert stats["packing_efficiency"] > 0.9 > 0.5 > stats["padding_efficiency"]
    assert set(stats["sources"]) == {"hotpotqa", "agentinstruct_sample", "sharegpt_sample"}


def test_same_seed_same_batches_other_seed_other_batches(epoch, config, tok, shared_data):
    """Determinism: a second pipeline with the same config repeats the batches; another seed reorders them."""
    batches, _ = epoch
    again = list(Pipeline(config, tok, BATCH))
    assert len(again) == len(batches) and all(np.array_equal(a[k], b[k]) for a, b in zip(again, batches) for k in a)
    other = next(iter(Pipeline(make_config(shared_data, seed=6), tok, BATCH)))
    assert not np.array_equal(other["inputs"], batches[0]["inputs"])


@pytest.mark.parametrize("taken", [2, 7])
def test_restore_resumes_exactly(epoch, config, tok, taken):
    """Save the position after N batches (through JSON), restore into a new pipeline: the rest equals the
    uninterrupted run's, and the final counters agree too."""
    batches, full = epoch
    first = Pipeline(config, tok, BATCH)
    it = iter(first)
    for _ in range(taken):
        next(it)
    state = json.loads(json.dumps(first.state()))
    assert len(json.dumps(state)) < 2000
    resumed = Pipeline(config, tok, BATCH)
    resumed.restore(state)
    rest = list(resumed)
    assert len(rest) == len(batches) - taken
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(rest, batches[taken:]) for k in a)
    assert resumed.counters == full.counters


def test_restore_refuses_a_state_from_another_config(epoch, tok, shared_data):
    """A state saved under another data config cannot be restored (it would not reproduce the batches)."""
    _, pipeline = epoch
    other = Pipeline(make_config(shared_data, seq_len=1024), tok, BATCH)
    with pytest.raises(ValueError, match="different data config"):
        other.restore(pipeline.state())


def test_each_host_gets_its_slice_of_the_global_batch(epoch, config, tok):
    """With 2 processes, host 0 and host 1 hold the halves of the single-process global batch."""
    batches, _ = epoch
    hosts = [Pipeline(config, tok, BATCH, process_index=i, process_count=2) for i in range(2)]
    for global_batch, local0, local1 in zip(batches[:3], *hosts):
        for k in global_batch:
            assert local0[k].shape[0] == BATCH // 2
            assert np.array_equal(np.concatenate([local0[k], local1[k]]), global_batch[k])


def test_a_batch_with_no_supervised_token_raises(config, tok, monkeypatch):
    """If rows ever arrived with all weights 0, the pipeline raises instead of letting the loss be silently 0."""
    pipeline = Pipeline(config, tok, BATCH)
    build = pipeline.stream.build

    def unsupervised(window):
        rows, counts = build(window)
        rows["weights"][:] = 0
        return rows, counts

    monkeypatch.setattr(pipeline.stream, "build", unsupervised)
    with pytest.raises(DataError, match="no supervised token"):
        next(iter(pipeline))


def test_overlong_policies_drop_truncate_or_name_the_example(shared_data, tok):
    """seq_len 256: `drop` counts drops; `truncate` cuts them to a row (dropping those left with nothing to train);
    `error` names file:line."""
    dropped = epoch_stats(make_config(shared_data, seq_len=256), tok)
    truncated = epoch_stats(make_config(shared_data, seq_len=256, overlong="truncate"), tok)
    emptied = truncated["dropped"]["nothing_left_after_truncation"]
    assert dropped["dropped"]["too_long"] == truncated["truncated"] + emptied > emptied > 0
    assert truncated["examples"] == dropped["examples"] + truncated["truncated"]
    with pytest.raises(DataError, match=r"hotpotqa\.jsonl:\d+: \d+ tokens do not fit seq_len 256"):
        list(Pipeline(make_config(shared_data, seq_len=256, overlong="error"), tok, BATCH))


def test_a_window_that_packs_to_no_row_still_counts(shared_data, tok):
    """One example per window at seq_len 256: a dropped overlong example's window has no row to deliver, yet the
    pipeline's counters equal the row stream's over the epoch (drops and examples alike)."""
    config = make_config(shared_data, seq_len=256, pack_window=1)
    stats, pipeline = epoch_stats(config, tok), Pipeline(config, tok, BATCH)
    batches = list(pipeline)
    assert stats["dropped"]["too_long"] > 0
    assert pipeline.counters["dropped/too_long"] == stats["dropped"]["too_long"]
    assert pipeline.counters["examples"] == stats["examples"] == sum(len(set(b["segment_ids"][r][b["segment_ids"][r] > 0]))
                                                                     for b in batches for r in range(BATCH))


def test_skip_mode_trains_on_the_good_lines_and_counts_the_bad(shared_data, tok):
    """broken.jsonl with bad_input=skip: the good conversation is packed and each bad line is counted by reason."""
    config = from_dict(DataConfig, {"sources": [{"path": str(shared_data / "fixtures/broken.jsonl"), "format": "agentinstruct"}],
                                    "seq_len": 512, "epochs": 1, "bad_input": "skip"})
    pipeline = Pipeline(config, tok, 2)
    (batch,) = list(pipeline)
    assert pipeline.counters["examples"] == 1 and batch["weights"].sum() > 0
    assert {k: v for k, v in pipeline.counters.items() if k.startswith("bad_input/")} == {
        f"bad_input/{r}": 1 for r in ("invalid_json", "unknown_role", "nothing_to_train", "missing_field")}
