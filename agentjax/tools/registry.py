"""Build the configured tools: shared parts once per run, a fresh set of tool objects per episode."""

from __future__ import annotations

import time
from typing import Callable

from agentjax.tools.base import Tool
from agentjax.tools.calculator import Calculator
from agentjax.tools.config import ToolsConfig
from agentjax.tools.corpus_search import CorpusSearch
from agentjax.tools.finish import finish_tool
from agentjax.tools.recorded import RecordedSearch
from agentjax.tools.serpapi import SerpApiSearch
from agentjax.tools.wikipedia import WikipediaApi, WikipediaEpisode


class Toolkit:
    """The run's tools. Construction does the slow or failing work (API keys checked, indexes built, HTTP clients
    made), so a missing key stops the run before episode 1; `new_episode()` is cheap and gives each episode its
    own tool objects, so per-episode state (Wikipedia's open page and lookup cursor) never leaks between episodes.
    Shared parts are thread-safe: episodes may call their tools from a thread pool.
    """

    def __init__(self, config: ToolsConfig, sleep: Callable[[float], None] = time.sleep):
        config.validate()
        self.config = config
        self._search = _search_factory(config, sleep)
        self._shared: dict[str, Tool] = {"calculate": Calculator()} if config.calculate else {}

    def new_episode(self, is_correct: Callable[[str], bool] | None = None) -> dict[str, Tool]:
        """Tool name -> tool for one episode (search tools first, `finish` last, checking answers if `is_correct`)."""
        return {**self._search(), **self._shared, "finish": finish_tool(is_correct)}

    def describe(self) -> str:
        """One line per tool, `name[argument]: what it does`, for prompts."""
        return "\n".join(tool.description for tool in self.new_episode().values())


def build_tools(config: ToolsConfig, sleep: Callable[[float], None] = time.sleep) -> dict[str, Tool]:
    """The tools for a single episode; to run many episodes, make one `Toolkit` and call `new_episode()` each time."""
    return Toolkit(config, sleep).new_episode()


def _search_factory(config: ToolsConfig, sleep: Callable[[float], None]) -> Callable[[], dict[str, Tool]]:
    """Builds the configured search backend now; returns a maker of that backend's per-episode tools."""
    if config.search == "wikipedia":
        api = WikipediaApi(config.wikipedia, config.http, sleep)
        return lambda: WikipediaEpisode(api).tools()
    if config.search == "none":
        return dict
    search: Tool
    if config.search == "serpapi":
        search = SerpApiSearch(config.serpapi, config.http, sleep)
    elif config.search == "corpus":
        search = CorpusSearch(config.corpus)
    else:
        search = RecordedSearch(config.recorded.paths)
    return lambda: {"search": search}
