"""Weighted, seeded sampling across sources, as a pure function of (seed, window, draws so far) so it can resume exactly."""

from __future__ import annotations

import enum

from functools import lru_cache

import numpy as np


class RngStream(enum.IntEnum):
    """The independent random streams of the data order, each seeded by (seed, its coordinates, its number).

    The numbers are part of every saved data position's meaning: changing one changes which batches a seed gives."""

    SOURCE_DRAWS = 1  # which source each example of a window comes from
    EPOCH_ORDER = 2  # the order of one source's examples in one epoch
    ROW_SHUFFLE = 3  # the order of a window's packed rows


class Mixture:
    """Which example comes next: sources are picked with probability ~ weight; each walks its own shuffled epochs.

    With `epochs` set, a source stops being picked after that many passes (the others' weights renormalise),
    so every example appears exactly `epochs` times; with `epochs=None` sampling goes on forever.
    """

    def __init__(self, sizes: list[int], weights: list[float], seed: int, shuffle: bool = True, epochs: int | None = None):
        if len(sizes) != len(weights) or not sizes:
            raise ValueError("need one weight per source and at least one source")
        if min(sizes) < 1:
            raise ValueError(f"every source needs at least one example; sizes {sizes}")
        self.sizes = np.asarray(sizes, np.int64)
        self.weights = np.asarray(weights, np.float64) / np.sum(weights)
        self.seed, self.shuffle, self.epochs = seed, shuffle, epochs
        self._order = lru_cache(maxsize=2 * len(sizes))(self._example_order)

    def start(self) -> list[int]:
        """Draws per source at the very beginning."""
        return [0] * len(self.sizes)

    def finished(self, draws: list[int]) -> bool:
        """True once every source has had its `epochs` passes (never without `epochs`)."""
        return self.epochs is not None and bool(np.all(np.asarray(draws) >= self.epochs * self.sizes))

    def window(self, window: int, draws: list[int], size: int) -> tuple[np.ndarray, list[int]]:
        """The `(source, example)` pairs of window `window` given `draws` so far, and the draws after it."""
        rng = np.random.default_rng([self.seed, window, RngStream.SOURCE_DRAWS])
        drawn = np.asarray(draws, np.int64)
        limit = np.full(len(self.sizes), np.iinfo(np.int64).max) if self.epochs is None else self.epochs * self.sizes
        picks: list[np.ndarray] = []
        wanted = size
        while wanted > 0 and np.any(drawn < limit):
            p = np.where(drawn < limit, self.weights, 0.0)
            choice = rng.choice(len(self.sizes), size=wanted, p=p / p.sum())
            cut = wanted  # stop at the first pick of a source that has run out, then renormalise
            for s in np.unique(choice):
                where = np.flatnonzero(choice == s)
                room = limit[s] - drawn[s]
                if len(where) > room:
                    cut = min(cut, int(where[room]))
            choice = choice[:cut]
            drawn += np.bincount(choice, minlength=len(self.sizes))
            picks.append(choice)
            wanted -= cut
        sources = np.concatenate(picks) if picks else np.zeros(0, np.int64)
        return self._examples(sources, np.asarray(draws, np.int64)), drawn.tolist()

    def _examples(self, sources: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """Map each pick to an example: the source's k-th draw is position k of its shuffled epoch order."""
        out = np.zeros((len(sources), 2), np.int64)
        out[:, 0] = sources
        for s in np.unique(sources):
            where = np.flatnonzero(sources == s)
            k = draws[s] + np.arange(len(where))
            epochs, positions = np.divmod(k, self.sizes[s])
            out[where, 1] = [self._order(int(s), int(e))[p] for e, p in zip(epochs, positions)]
        return out

    def _example_order(self, source: int, epoch: int) -> np.ndarray:
        """The order of a source's examples in one epoch: a seeded permutation, or file order without shuffling."""
        n = int(self.sizes[source])
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, source, epoch, RngStream.EPOCH_ORDER]).permutation(n)
