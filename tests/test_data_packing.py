"""Best-fit packing, the packed row layout, and the seeded mixture (ratios, epochs, resuming mid-stream)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from agentjax.data.mixture import Mixture
from agentjax.data.packing import best_fit_pack, layout_rows


def test_best_fit_places_every_example_once_within_capacity():
    """Each example lands in exactly one row, no row overflows, and the result is deterministic."""
    lengths = np.random.default_rng(0).integers(1, 700, size=500).tolist()
    rows = best_fit_pack(lengths, 1024)
    assert sorted(i for row in rows for i in row) == list(range(500))
    assert max(sum(lengths[i] for i in row) for row in rows) <= 1024
    assert rows == best_fit_pack(lengths, 1024)
    assert sum(lengths) / (len(rows) * 1024) > 0.95


def test_best_fit_finds_the_tight_packing_and_rejects_oversize():
    """6+4 and 5+5 fill two rows exactly; an example longer than a row is an error."""
    assert sorted(sorted(r) for r in best_fit_pack([6, 4, 5, 5], 10)) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="outside"):
        best_fit_pack([11], 10)


def test_layout_restarts_positions_and_keeps_targets_inside_segments():
    """Segment ids count up per row, positions restart at 0, targets are the next token of the same example,
    the weight of a slot is the weight of its target, and padding is segment 0 with weight 0."""
    rng = np.random.default_rng(1)
    examples = [(rng.integers(10, 99, n).astype(np.int32), (rng.random(n) > 0.5).astype(np.float32)) for n in (5, 3, 7, 2)]
    rows = [[2, 1], [0, 3]]
    out = layout_rows(examples, rows, 12, pad_id=0)
    assert all(v.shape == (2, 12) for v in out.values())
    for r, row in enumerate(rows):
        offset = 0
        for segment, i in enumerate(row, 1):
            ids, weights = examples[i]
            span = slice(offset, offset + len(ids) - 1)
            assert (out["segment_ids"][r, span] == segment).all()
            assert out["positions"][r, span].tolist() == list(range(len(ids) - 1))
            assert out["inputs"][r, span].tolist() == ids[:-1].tolist()
            assert out["targets"][r, span].tolist() == ids[1:].tolist()
            assert out["weights"][r, span].tolist() == weights[1:].tolist()
            offset += len(ids) - 1
        pad = slice(offset, None)
        assert not out["segment_ids"][r, pad].any() and not out["weights"][r, pad].any() and not out["inputs"][r, pad].any()


def _run(mixture: Mixture, windows: int, size: int, start: int = 0, draws=None) -> list[np.ndarray]:
    draws = mixture.start() if draws is None else draws
    out = []
    for w in range(start, start + windows):
        items, draws = mixture.window(w, draws, size)
        out.append(items)
    return out


def test_mixture_is_seeded_and_follows_the_weights():
    """Same seed -> same picks; a different seed differs; picks follow the weights (AgentTuning's eta = 0.2)."""
    mix = Mixture([100, 5000], [0.2, 0.8], seed=3)
    picks = np.concatenate(_run(mix, 20, 500))
    assert all(np.array_equal(a, b) for a, b in zip(_run(mix, 20, 500), _run(Mixture([100, 5000], [0.2, 0.8], seed=3), 20, 500)))
    assert not np.array_equal(picks, np.concatenate(_run(Mixture([100, 5000], [0.2, 0.8], seed=4), 20, 500)))
    assert abs((picks[:, 0] == 0).mean() - 0.2) < 0.02
    small = picks[picks[:, 0] == 0, 1]  # the small source cycles: each epoch is a permutation of all 100
    assert sorted(small[:100].tolist()) == list(range(100)) and not np.array_equal(small[:100], small[100:200])


def test_finite_epochs_give_every_example_exactly_that_many_times():
    """With epochs=2 and uneven weights, every example of every source appears exactly twice, then the mixture ends."""
    mix = Mixture([30, 7, 50], [0.7, 0.2, 0.1], seed=0, epochs=2)
    draws, picks, w = mix.start(), [], 0
    while not mix.finished(draws):
        items, draws = mix.window(w, draws, 16)
        picks += [tuple(p) for p in items.tolist()]
        w += 1
    assert Counter(picks) == Counter({(s, i): 2 for s, n in enumerate([30, 7, 50]) for i in range(n)})


def test_mixture_resumes_from_saved_draws():
    """Windows computed from (window index, draws before it) equal the uninterrupted run's."""
    mix = Mixture([40, 90], [0.5, 0.5], seed=7)
    full = _run(mix, 10, 32)
    draws = mix.start()
    for w in range(6):
        _, draws = mix.window(w, draws, 32)
    resumed = _run(Mixture([40, 90], [0.5, 0.5], seed=7), 4, 32, start=6, draws=draws)
    assert all(np.array_equal(a, b) for a, b in zip(full[6:], resumed))
