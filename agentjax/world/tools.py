"""The world's tools: ReAct's search/lookup over one split's documents, the calculator, finish; fresh per episode.

Browsing reuses `agentjax.tools.wikipedia.WikipediaEpisode` (ReAct's search/lookup semantics and wording) with
the split's documents in place of the Wikipedia API. The teacher and the evaluated agent both get their tools
from `WorldToolkit.new_episode()`, so training observations and evaluation observations are the same text.
"""

from __future__ import annotations

from typing import Callable

from agentjax.world.build import World
from agentjax.world.entities import SEARCH_SENTENCES
from agentjax.tools.base import FunctionTool, Tool
from agentjax.tools.calculator import Calculator
from agentjax.tools.config import WikipediaConfig
from agentjax.tools.finish import finish_tool
from agentjax.tools.wikipedia import Page, WikipediaEpisode



class Encyclopedia:
    """One split's documents behind the interface `WikipediaEpisode` browses: a page by exact title, similar titles."""

    def __init__(self, documents: dict[str, tuple[str, ...]]):
        self.config = WikipediaConfig(sentences=SEARCH_SENTENCES)
        self.pages = {_key(title): Page(title, " ".join(sentences)) for title, sentences in documents.items()}
        self.bigrams = {key: _bigrams(key) for key in self.pages}

    def page(self, title: str) -> Page | None:
        """The document titled `title` (case and spacing ignored), or None."""
        return self.pages.get(_key(title))

    def similar(self, text: str) -> list[str]:
        """The titles closest in spelling to `text` (most letter pairs in common, relative to all), best first."""
        query = _bigrams(_key(text))
        score = {key: len(query & pairs) / len(query | pairs) for key, pairs in self.bigrams.items()}
        best = sorted(score, key=lambda key: (-score[key], key))[: self.config.similar]
        return [self.pages[key].title for key in best]


def _key(text: str) -> str:
    """A title or query as it is matched: case-folded, spaces collapsed."""
    return " ".join(text.casefold().split())


def _bigrams(key: str) -> frozenset[str]:
    """The letter pairs of `key`, with its first and last letters paired with a space."""
    padded = f" {key} "
    return frozenset(padded[i:i + 2] for i in range(len(padded) - 1))


class WorldToolkit:
    """The tools of one split of the world; the search index is built once, tool objects are new for each episode."""

    def __init__(self, world: World, split: str):
        self.split = split
        self.encyclopedia = Encyclopedia(world.documents(split))

    def new_episode(self, is_correct: Callable[[str], bool] | None = None) -> dict[str, Tool]:
        """Tool name -> tool for one episode: search, lookup, calculate, finish (checking answers if `is_correct`)."""
        browser = WikipediaEpisode(self.encyclopedia)  # type: ignore[arg-type]  # same two methods, local pages
        tools: list[Tool] = [
            FunctionTool("search", "search[entity]: the first sentences of the document about an entity, or similar "
                         "titles when there is none", browser.search),
            FunctionTool("lookup", "lookup[keyword]: the next sentence containing keyword in the document last "
                         "found by search", browser.lookup),
            Calculator(),
            finish_tool(is_correct),
        ]
        return {tool.name: tool for tool in tools}

    def describe(self) -> str:
        """One line per tool, `name[argument]: what it does`, for prompts."""
        return "\n".join(tool.description for tool in self.new_episode().values())
