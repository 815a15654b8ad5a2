"""A BM25 index over short texts (bm25s), shared by the local-corpus search and the recorded search."""

from __future__ import annotations

import threading


def _tokens(texts: list[str]) -> list[list[str]]:
    """Lowercased words of two or more characters, English stopwords removed (bm25s's default analyser)."""
    import bm25s  # here, not on top: importing bm25s runs a JAX op, which would start JAX before jax.distributed

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class Bm25Index:
    """Ranks `texts` against a query; `search` returns (position, score) pairs with score > 0, best first."""

    def __init__(self, texts: list[str]):
        if not texts:
            raise ValueError("cannot build a BM25 index over no texts")
        import bm25s  # see _tokens

        self.size = len(texts)
        self._retriever = bm25s.BM25()
        self._retriever.index(_tokens(texts), show_progress=False)
        self._lock = threading.Lock()  # bm25s does not promise thread-safe retrieval

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Up to `k` best matches; none when the query shares no indexed word with any text."""
        tokens = _tokens([query])
        if not tokens[0]:
            return []
        with self._lock:
            positions, scores = self._retriever.retrieve(tokens, k=min(k, self.size), show_progress=False)
        return [(int(p), float(s)) for p, s in zip(positions[0], scores[0]) if s > 0]
