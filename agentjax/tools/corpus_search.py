"""`search[query]` over a local JSONL corpus with BM25: offline, deterministic, no key."""

from __future__ import annotations

from agentjax.util.errors import DataError
from agentjax.util.records import field, records
from agentjax.tools.base import ToolError
from agentjax.tools.bm25_index import Bm25Index
from agentjax.tools.config import CorpusConfig


class CorpusSearch:
    """The `search` tool over passages `{"title": ..., "text": ...}`, one a line; shows the best passage, or the
    top_k best numbered `#1: ... #2: ...` (NAT's format) when top_k > 1."""

    name = "search"
    description = "search[query]: search the document collection and return the most relevant passage"

    def __init__(self, config: CorpusConfig):
        self.top_k = config.top_k
        self.passages: list[str] = []
        for where, record in records(config.path):
            text = field(record, config.text_field, where).strip()
            title = record.get(config.title_field, "")
            if not isinstance(title, str):
                raise DataError(where, "bad_type", f"{config.title_field}: expected str, got {title!r:.80}")
            self.passages.append(f"{title.strip()}: {text}" if title.strip() else text)
        if not self.passages:
            raise DataError(config.path, "empty", "the corpus has no passages")
        self.index = Bm25Index(self.passages)

    def __call__(self, argument: str) -> str:
        query = argument.strip()
        if not query:
            raise ToolError("search needs a query, e.g. search[capital of France]")
        hits = self.index.search(query, self.top_k)
        if not hits:
            return f"No results found for {query!r}."
        if self.top_k == 1:
            return self.passages[hits[0][0]]
        return " ".join(f"#{rank}: {self.passages[p]}" for rank, (p, _) in enumerate(hits, 1))
