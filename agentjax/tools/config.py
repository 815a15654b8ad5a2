"""Typed configuration of the agent's tools (the `tools:` block of an eval config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agentjax.configlib import ConfigError, ConfigSection


@dataclass
class HttpConfig(ConfigSection):
    """How networked tools talk to their servers: timeout, reply size limit, retries with backoff, response cache."""

    timeout_s: float = 15.0  # for each whole reply, however slowly its bytes arrive
    max_reply_bytes: int = 4 << 20  # a longer reply is a failure (never read further, never cached)
    retries: int = 3  # extra attempts after a 429, a 5xx, a timeout, a dropped connection or malformed JSON
    backoff_s: float = 1.0  # first wait; doubles each retry
    backoff_max_s: float = 30.0
    cache_dir: str | None = "~/.cache/agentjax/tools"  # None turns the cache off
    user_agent: str = "agentjax/0.1 (tool-using agent evaluation; https://github.com/agentjax)"

    def validate(self):
        if self.timeout_s <= 0 or self.max_reply_bytes < 1 or self.retries < 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ConfigError("http: timeout_s must be > 0, max_reply_bytes >= 1; retries, backoff_s and backoff_max_s "
                              "must be >= 0")


@dataclass
class SerpApiConfig(ConfigSection):
    """Google search through SerpAPI, as FireAct ran it; the key is read from the environment, never the config."""

    base_url: str = "https://serpapi.com/search.json"
    key_env: str = "SERPAPI_API_KEY"
    engine: str = "google"
    gl: str = "us"
    hl: str = "en"


@dataclass
class WikipediaConfig(ConfigSection):
    """Wikipedia through the MediaWiki API, with ReAct's search/lookup behaviour."""

    base_url: str = "https://en.wikipedia.org/w/api.php"
    sentences: int = 5  # a successful search shows the page's first sentences
    similar: int = 5  # a failed search suggests this many titles

    def validate(self):
        if self.sentences < 1 or self.similar < 1:
            raise ConfigError("wikipedia: sentences and similar must be >= 1")


@dataclass
class CorpusConfig(ConfigSection):
    """BM25 search over a local JSONL corpus, one passage a line: {"title": ..., "text": ...}."""

    path: str = ""
    text_field: str = "text"
    title_field: str = "title"  # optional in each line; indexed and shown with the text
    top_k: int = 1

    def validate(self):
        if self.top_k < 1:
            raise ConfigError("corpus.top_k must be >= 1")


@dataclass
class RecordedConfig(ConfigSection):
    """Search replayed from recorded trajectories (FireAct results JSON, gpt-format JSONL, alpaca JSON)."""

    paths: list[str] = field(default_factory=list)  # files, or folders whose *.json / *.jsonl are all read


@dataclass
class ToolsConfig(ConfigSection):
    """Which search backend the agent gets (tool name `search`), whether it has `calculate`; `finish` always."""

    search: Literal["serpapi", "wikipedia", "corpus", "recorded", "none"] = "recorded"
    calculate: bool = False
    http: HttpConfig = field(default_factory=HttpConfig)
    serpapi: SerpApiConfig = field(default_factory=SerpApiConfig)
    wikipedia: WikipediaConfig = field(default_factory=WikipediaConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    recorded: RecordedConfig = field(default_factory=RecordedConfig)

    def validate(self):
        for part in (self.http, self.wikipedia, self.corpus):
            part.validate()
        if self.search == "corpus" and not self.corpus.path:
            raise ConfigError("corpus.path: set the JSONL corpus file for search=corpus")
        if self.search == "recorded" and not self.recorded.paths:
            raise ConfigError(
                "recorded.paths: list FireAct trajectory files or folders (e.g. data/fireact/trajs and "
                "data/fireact/finetune/gpt_format) for search=recorded, or choose search=serpapi|wikipedia|corpus|none"
            )
