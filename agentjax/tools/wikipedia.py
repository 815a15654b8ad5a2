"""`search[entity]` and `lookup[keyword]` over Wikipedia's MediaWiki API, with ReAct's semantics.

search shows the first sentences of the entity's page (or "Could not find ... Similar: [...]"); lookup shows, one
call at a time, the next sentence of that page containing the keyword. The page and the lookup cursor are per
episode: `WikipediaEpisode(api).tools()` gives a fresh, linked search/lookup pair.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from agentjax.tools.base import FunctionTool, Tool, ToolError
from agentjax.tools.config import HttpConfig, WikipediaConfig
from agentjax.tools.http import JsonHttpClient

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True)
class Page:
    """A Wikipedia article's title and plain text."""

    title: str
    text: str


def sentences(text: str) -> list[str]:
    """The article's sentences in order, without blank lines and `== Section ==` headings."""
    out = []
    for paragraph in text.split("\n"):
        paragraph = paragraph.strip()
        if paragraph and not paragraph.startswith("=="):
            out.extend(s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip())
    return out


def _check_reply(reply: Any) -> None:
    """ToolError for MediaWiki error objects and replies without a `query` part, e.g. `{}` (so they are not cached)."""
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        raise ToolError(f"wikipedia: {reply['error'].get('info', 'API error')}")
    if not isinstance(reply, dict) or not isinstance(reply.get("query"), dict):
        raise ToolError(f"wikipedia returned a reply that is not a query result: {str(reply)[:100]}")


class WikipediaApi:
    """The two MediaWiki queries the tools need: an article by title, and titles matching a query. Shared, stateless."""

    def __init__(self, config: WikipediaConfig, http: HttpConfig, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.client = JsonHttpClient("wikipedia", config.base_url, http, sleep=sleep)

    def _query(self, **params: str) -> dict:
        """The `query` part of an API reply."""
        reply = self.client.get({"action": "query", "format": "json", "formatversion": "2", **params}, _check_reply)
        return reply.get("query", {})

    def page(self, title: str) -> Page | None:
        """The article titled `title` (redirects followed); None when it is missing or a disambiguation page."""
        pages = self._query(titles=title, prop="extracts|pageprops", explaintext="1", redirects="1",
                            ppprop="disambiguation").get("pages")
        found: Any = pages[0] if isinstance(pages, list) and pages else None
        if not isinstance(found, dict) or found.get("missing") or found.get("invalid") or "title" not in found:
            return None
        if "disambiguation" in (found.get("pageprops") or {}):
            return None
        return Page(found["title"], str(found.get("extract", "")))

    def similar(self, text: str) -> list[str]:
        """Titles of the top full-text search results for `text`."""
        hits = self._query(list="search", srsearch=text, srlimit=str(self.config.similar)).get("search") or []
        return [hit["title"] for hit in hits if isinstance(hit, dict) and "title" in hit]


class WikipediaEpisode:
    """One episode's browsing state (the current page, the lookup keyword and cursor) and its two tools."""

    def __init__(self, api: WikipediaApi):
        self.api = api
        self.page: Page | None = None
        self.keyword = ""
        self.matches: list[str] = []
        self.cursor = 0

    def tools(self) -> dict[str, Tool]:
        """`search` and `lookup` bound to this episode's state."""
        return {
            "search": FunctionTool("search", "search[entity]: open the Wikipedia page of an entity and show its "
                                   "first sentences, or suggest similar titles", self.search),
            "lookup": FunctionTool("lookup", "lookup[keyword]: the next sentence containing keyword in the page "
                                   "last opened by search", self.lookup),
        }

    def search(self, entity: str) -> str:
        """Open `entity`'s page (resetting lookup) and show its first sentences, or list similar titles."""
        entity = entity.strip()
        if not entity:
            raise ToolError("search needs an entity, e.g. search[Albert Einstein]")
        self.page, self.keyword, self.matches, self.cursor = self.api.page(entity), "", [], 0
        if self.page is None:
            return f"Could not find {entity}. Similar: {self.api.similar(entity)}."
        return " ".join(sentences(self.page.text)[: self.api.config.sentences]) or f"The page {self.page.title} is empty."

    def lookup(self, keyword: str) -> str:
        """The next sentence of the current page containing `keyword` (case-insensitive), as "(Result i / n) ..."."""
        keyword = keyword.strip()
        if not keyword:
            raise ToolError("lookup needs a keyword, e.g. lookup[born]")
        if self.page is None:
            return "No page is open to look up in; search for an entity first (a failed search opens nothing)."
        if keyword.lower() != self.keyword.lower():
            self.keyword, self.cursor = keyword, 0
            self.matches = [s for s in sentences(self.page.text) if keyword.lower() in s.lower()]
        else:
            self.cursor += 1
        if self.cursor >= len(self.matches):
            return "No more results."
        return f"(Result {self.cursor + 1} / {len(self.matches)}) {self.matches[self.cursor]}"
