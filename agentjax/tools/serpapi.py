"""`search[query]` through SerpAPI's Google results, reduced to one snippet the way FireAct did."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

from agentjax.configlib import ConfigError
from agentjax.tools.base import ToolError
from agentjax.tools.config import HttpConfig, SerpApiConfig
from agentjax.tools.http import JsonHttpClient


def snippet(reply: Mapping[str, Any]) -> str | None:
    """FireAct's choice: answer box answer, else its snippet, else its first highlighted word, else the top snippet."""
    box = _mapping(reply.get("answer_box"))
    organic = reply.get("organic_results")
    top = _mapping(organic[0] if isinstance(organic, list) and organic else None)
    highlighted = box.get("snippet_highlighted_words")
    candidates = (box.get("answer"), box.get("snippet"), highlighted[0] if isinstance(highlighted, list) and highlighted
                  else None, top.get("snippet"))
    return next((str(c).strip() for c in candidates if c not in (None, "")), None)


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a JSON object, else an empty one (replies may omit or reshape optional parts)."""
    return value if isinstance(value, dict) else {}


def _check_reply(reply: Any) -> None:
    """ToolError for replies that are not a result page or carry an error other than "no results" (not cached).

    A result page carries `search_metadata`; a page without results says so in `error`. Anything else (`{}`, an
    object from some other server) is a failure, so it is asked again rather than cached as "No results".
    """
    if not isinstance(reply, dict):
        raise ToolError("serpapi returned an unexpected reply (not a JSON object)")
    error = str(reply.get("error", ""))
    if error and "any results" not in error and snippet(reply) is None:
        raise ToolError(f"serpapi: {error}")
    if not error and not isinstance(reply.get("search_metadata"), dict):
        raise ToolError(f"serpapi returned a reply that is not a result page (no search_metadata): {str(reply)[:100]}")


class SerpApiSearch:
    """The `search` tool over Google via SerpAPI; the API key comes from the environment and is checked at once."""

    name = "search"
    description = "search[query]: search Google and return the most relevant snippet"

    def __init__(self, config: SerpApiConfig, http: HttpConfig, sleep: Callable[[float], None] = time.sleep):
        key = os.environ.get(config.key_env, "").strip()
        if not key:
            raise ConfigError(
                f"tools.serpapi: the environment variable {config.key_env} is not set. Export your SerpAPI key "
                f"(serpapi.com/manage-api-key) as {config.key_env}, or use tools.search=recorded for offline runs."
            )
        self.config = config
        self.client = JsonHttpClient("serpapi", config.base_url, http, secret_params={"api_key": key}, sleep=sleep)

    def __call__(self, argument: str) -> str:
        query = argument.strip()
        if not query:
            raise ToolError("search needs a query, e.g. search[capital of France]")
        params = {"engine": self.config.engine, "q": query, "gl": self.config.gl, "hl": self.config.hl}
        found = snippet(self.client.get(params, _check_reply))
        return found if found is not None else f"No results found for {query!r}."
