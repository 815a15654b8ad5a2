"""Networked tools (SerpAPI, Wikipedia) run their real HTTP code against a local server with recorded replies.

The server listens on 127.0.0.1 only; backoff sleeps are injected (recorded, not slept); the only real waits are
the ~0.1 s client timeouts of the timeout tests.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import pytest

from agentjax.configlib import ConfigError
from agentjax.tools import ToolError, Toolkit, ToolsConfig, run_action
from agentjax.tools.base import FunctionTool
from agentjax.tools.config import CorpusConfig, HttpConfig, SerpApiConfig, WikipediaConfig

KEY = "sk-test-SECRET-9f8e7d6c"


@dataclass
class Reply:
    """A recorded server reply: a JSON-able body (or raw text), a status, optional delay, headers, and a drip (the
    body sent one byte every `drip` seconds)."""

    body: Any
    status: int = 200
    delay: float = 0.0
    headers: dict = field(default_factory=dict)
    drip: float = 0.0


class LocalServer:
    """Serves scripted replies in order (or from `route(params)`), and records every request's query parameters."""

    def __init__(self):
        self.replies: list[Reply] = []
        self.route: Callable[[dict], Reply] | None = None
        self.requests: list[dict] = []
        self.closed = threading.Event()  # ends dripping replies when the test is over
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                params = dict(parse_qsl(urlsplit(self.path).query))
                reply = owner._next(params)
                if reply.delay:
                    threading.Event().wait(reply.delay)
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                try:
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if not reply.drip:
                        self.wfile.write(body.encode())
                    for byte in body.encode() if reply.drip else b"":
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if owner.closed.wait(reply.drip):
                            return
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api"

    def _next(self, params: dict) -> Reply:
        with self._lock:
            self.requests.append(params)
            if self.route is not None:
                return self.route(params)
            if self.replies:
                return self.replies.pop(0)
        return Reply({"error": "test server: no reply scripted for this request"}, status=500)

    def serve(self, *replies: Reply) -> None:
        self.replies = list(replies)


@pytest.fixture
def server():
    srv = LocalServer()
    thread = threading.Thread(target=srv.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.closed.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def sleeps():
    """Backoff waits requested by the client (recorded instead of slept)."""
    return []


def serpapi_toolkit(server, tmp_path, sleeps, monkeypatch, **http) -> Toolkit:
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    options = dict(timeout_s=2.0, retries=2, backoff_s=0.5, backoff_max_s=4.0, cache_dir=str(tmp_path / "cache"))
    config = ToolsConfig(search="serpapi", serpapi=SerpApiConfig(base_url=server.url), http=HttpConfig(**{**options, **http}))
    return Toolkit(config, sleep=sleeps.append)


def search(toolkit: Toolkit, query: str):
    return run_action(toolkit.new_episode(), f"search[{query}]")


def google(answer_box: dict | None = None, organic: list | None = None) -> dict:
    """A SerpAPI-shaped reply."""
    reply = {"search_metadata": {"status": "Success"}, "search_parameters": {"engine": "google", "q": "..."}}
    if answer_box is not None:
        reply["answer_box"] = answer_box
    reply["organic_results"] = organic if organic is not None else [{"position": 1, "snippet": "organic snippet"}]
    return reply


# --- SerpAPI -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        (google({"answer": "Paris", "snippet": "box snippet", "snippet_highlighted_words": ["Paris"]}), "Paris"),
        (google({"snippet": "box snippet", "snippet_highlighted_words": ["word"]}), "box snippet"),
        (google({"snippet_highlighted_words": ["highlighted", "more"]}), "highlighted"),
        (google({"title": "no text fields"}), "organic snippet"),
        (google(None), "organic snippet"),
        (google(None, organic=[]), "No results found for 'capital of France'."),
        ({"error": "Google hasn't returned any results for this query."}, "No results found for 'capital of France'."),
    ],
)
def test_serpapi_snippet_order(server, tmp_path, sleeps, monkeypatch, reply, expected):
    """The observation follows FireAct: answer, answer-box snippet, first highlighted word, first organic snippet."""
    server.serve(Reply(reply))
    result = search(serpapi_toolkit(server, tmp_path, sleeps, monkeypatch), "capital of France")
    assert (result.status, result.observation) == ("ok", expected)
    assert server.requests == [{"engine": "google", "q": "capital of France", "gl": "us", "hl": "en", "api_key": KEY}]


def test_429_then_success(server, tmp_path, sleeps, monkeypatch):
    """A 429 is retried after the first backoff wait, and the retry's answer is the observation."""
    server.serve(Reply({"error": "rate limited"}, status=429), Reply(google({"answer": "42"})))
    result = search(serpapi_toolkit(server, tmp_path, sleeps, monkeypatch), "the answer")
    assert (result.status, result.observation) == ("ok", "42")
    assert len(server.requests) == 2 and sleeps == [0.5]


def test_backoff_doubles_honours_retry_after_and_is_capped(server, tmp_path, sleeps, monkeypatch):
    """Waits double per retry, stretch to the server's Retry-After, and never exceed backoff_max_s."""
    server.serve(Reply("", 503), Reply("", 502), Reply("", 429, headers={"Retry-After": "3"}),
                 Reply("", 429, headers={"Retry-After": "100"}), Reply(google({"answer": "ok"})))
    result = search(serpapi_toolkit(server, tmp_path, sleeps, monkeypatch, retries=4), "q")
    assert result.observation == "ok"
    assert sleeps == [0.5, 1.0, 3.0, 4.0]


def test_5xx_until_retries_run_out_is_a_failure_observation(server, tmp_path, sleeps, monkeypatch):
    """When every attempt fails the agent reads why; nothing is cached, so a later call asks the server again."""
    server.serve(Reply("", 500), Reply("", 500), Reply("", 500), Reply(google({"answer": "back"})))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    failed = search(toolkit, "q")
    assert failed.status == "tool_error"
    assert failed.observation == "The search tool failed: serpapi is unavailable: HTTP 500 (after 3 attempts)"
    assert search(toolkit, "q").observation == "back"


def test_timeout_is_a_failure_observation_and_the_episode_goes_on(server, tmp_path, sleeps, monkeypatch):
    """A server slower than the timeout gives a tool_error observation; the same episode's next call works."""
    server.serve(Reply(google({"answer": "late"}), delay=0.5), Reply(google({"answer": "late"}), delay=0.5),
                 Reply(google({"answer": "on time"})))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch, timeout_s=0.1, retries=1)
    tools = toolkit.new_episode()
    failed = run_action(tools, "search[slow query]")
    assert failed.status == "tool_error"
    assert "no complete reply within 0.1s" in failed.observation and "after 2 attempts" in failed.observation
    assert run_action(tools, "search[another query]").observation == "on time"


def test_malformed_json_is_retried_then_reported(server, tmp_path, sleeps, monkeypatch):
    """A reply that is not JSON is retried; if it never becomes JSON the observation says so and nothing is cached."""
    server.serve(Reply("<html>busy</html>"), Reply('{"answer_box": '), Reply("not json"))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    failed = search(toolkit, "q")
    assert failed.status == "tool_error" and "not valid JSON" in failed.observation
    assert len(server.requests) == 3
    assert not list((tmp_path / "cache").rglob("*.json"))
    server.serve(Reply("{oops"), Reply(google({"answer": "fine"})))
    assert search(toolkit, "q").observation == "fine"


def test_serpapi_error_object_is_a_failure_and_not_cached(server, tmp_path, sleeps, monkeypatch):
    """A 200 reply carrying an error (not "no results") is a failure observation, asked again on the next call."""
    server.serve(Reply({"error": "Your account has run out of searches."}), Reply(google({"answer": "ok"})))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    failed = search(toolkit, "q")
    assert failed.status == "tool_error" and failed.observation.endswith("serpapi: Your account has run out of searches.")
    assert search(toolkit, "q").observation == "ok" and len(server.requests) == 2


def test_client_errors_are_not_retried(server, tmp_path, sleeps, monkeypatch):
    """A 4xx other than 429 (e.g. a bad key) fails at once, without waiting, and says what the server said."""
    server.serve(Reply({"error": "Invalid API key."}, status=401))
    result = search(serpapi_toolkit(server, tmp_path, sleeps, monkeypatch), "q")
    assert result.status == "tool_error" and "HTTP 401" in result.observation and "Invalid API key" in result.observation
    assert len(server.requests) == 1 and sleeps == []


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_fails_at_construction(server, tmp_path, monkeypatch, value):
    """Without SERPAPI_API_KEY the toolkit cannot be built (so no episode starts), and no request is made."""
    if value is None:
        monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("SERPAPI_API_KEY", value)
    config = ToolsConfig(search="serpapi", serpapi=SerpApiConfig(base_url=server.url),
                         http=HttpConfig(cache_dir=str(tmp_path / "cache")))
    with pytest.raises(ConfigError, match="SERPAPI_API_KEY is not set"):
        Toolkit(config)
    assert server.requests == []


def test_key_never_leaks(server, tmp_path, sleeps, monkeypatch, caplog):
    """The key reaches the server but never the logs (even urllib3's DEBUG URLs), errors, observations or cache."""
    caplog.set_level(logging.DEBUG)
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch, timeout_s=0.1, retries=1)
    server.serve(
        Reply(google({"answer": f"an answer that quotes {KEY}"})),  # a reply echoing the key
        Reply({"error": f"Invalid API key {KEY}"}, status=401),
        Reply("", 500), Reply("", 500),
        Reply("", delay=0.4), Reply("", delay=0.4),
    )
    texts = [search(toolkit, f"query {i}").observation for i in range(4)]
    with socket.socket() as s:  # a port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    refused = ToolsConfig(search="serpapi", serpapi=SerpApiConfig(base_url=f"http://127.0.0.1:{closed_port}/api"),
                          http=HttpConfig(retries=0, cache_dir=str(tmp_path / "cache")))
    with pytest.raises(ToolError) as raised:
        Toolkit(refused).new_episode()["search"]("query")
    texts += [str(raised.value), repr(raised.value)]
    assert "connection failed" in texts[-2] and "***" in texts[-2]  # the URL is in the message, the key is not
    cached = [p.read_text() for p in (tmp_path / "cache").rglob("*.json")]
    assert len(cached) == 1 and "query 0" in cached[0]
    assert all(r.get("api_key") == KEY for r in server.requests)  # the server did get the key
    assert "***" in caplog.text  # urllib3 logged the request URL, redacted
    for text in texts + cached + [caplog.text]:
        assert KEY not in text


def test_cache_persists_across_toolkits_and_can_be_disabled(server, tmp_path, sleeps, monkeypatch):
    """A repeated call is answered from disk (no request), also by a new toolkit; cache_dir=None always asks."""
    server.route = lambda params: Reply(google({"answer": f"answer to {params['q']}"}))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    assert search(toolkit, "a").observation == "answer to a"
    assert search(toolkit, "a").observation == "answer to a"
    assert search(serpapi_toolkit(server, tmp_path, sleeps, monkeypatch), "a").observation == "answer to a"
    assert search(toolkit, "b").observation == "answer to b"
    assert [r["q"] for r in server.requests] == ["a", "b"]
    uncached = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch, cache_dir=None)
    search(uncached, "a"), search(uncached, "a")
    assert [r["q"] for r in server.requests] == ["a", "b", "a", "a"]


def test_unreadable_cache_entry_is_refetched(server, tmp_path, sleeps, monkeypatch):
    """A corrupted cache file is treated as a miss and rewritten, not served or fatal."""
    server.route = lambda params: Reply(google({"answer": "fresh"}))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    search(toolkit, "a")
    (entry,) = (tmp_path / "cache").rglob("*.json")
    entry.write_text("{truncated")
    assert search(toolkit, "a").observation == "fresh"
    assert len(server.requests) == 2 and json.loads(entry.read_text())["value"]["answer_box"]["answer"] == "fresh"


def test_concurrent_calls_share_the_cache_safely(server, tmp_path, sleeps, monkeypatch):
    """Many threads calling at once get their own right answers; cache files are complete; no temp files remain."""
    server.route = lambda params: Reply(google({"answer": f"answer to {params['q']}"}), delay=0.01)
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    queries = [f"q{i % 6}" for i in range(48)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: search(toolkit, q).observation, queries))
    assert answers == [f"answer to {q}" for q in queries]
    files = list((tmp_path / "cache").rglob("*"))
    entries = [p for p in files if p.is_file()]
    assert len(entries) == 6 and all(p.suffix == ".json" for p in entries)
    assert all(json.loads(p.read_text())["value"]["answer_box"]["answer"].startswith("answer to") for p in entries)


# --- Wikipedia -----------------------------------------------------------------------------------------------

EINSTEIN = (
    "Albert Einstein (14 March 1879 – 18 April 1955) was a German-born theoretical physicist. "
    "He is best known for developing the theory of relativity. Einstein also contributed to quantum mechanics.\n"
    "His mass–energy equivalence formula has been called the world's most famous equation. "
    "He received the 1921 Nobel Prize in Physics.\n\n\n== Life and career ==\n\n"
    "Einstein was born in Ulm. He moved to Switzerland, where he studied to become a physicist. "
    "He died in Princeton."
)


def wiki_page(title: str, extract: str, **extra) -> dict:
    return {"batchcomplete": True, "query": {"pages": [{"pageid": 736, "ns": 0, "title": title, "extract": extract, **extra}]}}


def wiki_missing(title: str) -> dict:
    return {"batchcomplete": True, "query": {"pages": [{"ns": 0, "title": title, "missing": True}]}}


def wiki_search(*titles: str) -> dict:
    hits = [{"ns": 0, "title": t, "pageid": i, "snippet": "..."} for i, t in enumerate(titles)]
    return {"batchcomplete": True, "query": {"searchinfo": {"totalhits": len(hits)}, "search": hits}}


def wiki_route(params: dict) -> Reply:
    """A small Wikipedia: Albert Einstein exists, Mercury is a disambiguation page, everything else is missing."""
    if params.get("list") == "search":
        return Reply(wiki_search("Albert Einstein", "Einstein family"))
    title = params["titles"]
    if title == "Albert Einstein":
        return Reply(wiki_page(title, EINSTEIN))
    if title == "Mercury":
        return Reply(wiki_page(title, "Mercury may refer to:", pageprops={"disambiguation": ""}))
    return Reply(wiki_missing(title))


def wiki_toolkit(server, tmp_path, sleeps) -> Toolkit:
    config = ToolsConfig(search="wikipedia", wikipedia=WikipediaConfig(base_url=server.url),
                         http=HttpConfig(timeout_s=2.0, retries=2, backoff_s=0.25, cache_dir=str(tmp_path / "cache")))
    return Toolkit(config, sleep=sleeps.append)


def test_wikipedia_search_shows_first_sentences(server, tmp_path, sleeps):
    """A found page shows its first 5 sentences (headings skipped), from a MediaWiki extracts query."""
    server.route = wiki_route
    tools = wiki_toolkit(server, tmp_path, sleeps).new_episode()
    assert list(tools) == ["search", "lookup", "finish"]
    result = run_action(tools, "search[Albert Einstein]")
    assert result.observation == (
        "Albert Einstein (14 March 1879 – 18 April 1955) was a German-born theoretical physicist. "
        "He is best known for developing the theory of relativity. Einstein also contributed to quantum mechanics. "
        "His mass–energy equivalence formula has been called the world's most famous equation. "
        "He received the 1921 Nobel Prize in Physics."
    )
    (request,) = server.requests
    assert request["action"] == "query" and request["titles"] == "Albert Einstein"
    assert request["prop"] == "extracts|pageprops" and request["explaintext"] == "1" and request["redirects"] == "1"


@pytest.mark.parametrize("entity", ["Einstien", "Mercury"])
def test_wikipedia_missing_or_ambiguous_suggests_similar(server, tmp_path, sleeps, entity):
    """A missing or disambiguation page gives "Could not find X. Similar: [...]" from a full-text search."""
    server.route = wiki_route
    result = run_action(wiki_toolkit(server, tmp_path, sleeps).new_episode(), f"search[{entity}]")
    assert result.observation == f"Could not find {entity}. Similar: ['Albert Einstein', 'Einstein family']."
    assert server.requests[-1]["list"] == "search" and server.requests[-1]["srsearch"] == entity


def test_wikipedia_lookup_steps_through_matches(server, tmp_path, sleeps):
    """lookup gives the next sentence with the keyword each call, restarts for a new keyword or a new search."""
    server.route = wiki_route
    tools = wiki_toolkit(server, tmp_path, sleeps).new_episode()
    assert run_action(tools, "lookup[physicist]").observation.startswith("No page is open")
    run_action(tools, "search[Albert Einstein]")
    steps = [run_action(tools, action).observation for action in
             ["lookup[physicist]", "lookup[Physicist]", "lookup[physicist]", "lookup[Nobel]", "lookup[physicist]"]]
    assert steps == [
        "(Result 1 / 2) Albert Einstein (14 March 1879 – 18 April 1955) was a German-born theoretical physicist.",
        "(Result 2 / 2) He moved to Switzerland, where he studied to become a physicist.",
        "No more results.",
        "(Result 1 / 1) He received the 1921 Nobel Prize in Physics.",
        "(Result 1 / 2) Albert Einstein (14 March 1879 – 18 April 1955) was a German-born theoretical physicist.",
    ]
    run_action(tools, "search[Nowhere]")
    assert run_action(tools, "lookup[physicist]").observation.startswith("No page is open")


def test_wikipedia_state_is_per_episode(server, tmp_path, sleeps):
    """Each new_episode() has its own open page: one episode's search is invisible to another's lookup."""
    server.route = wiki_route
    toolkit = wiki_toolkit(server, tmp_path, sleeps)
    first, second = toolkit.new_episode(), toolkit.new_episode()
    run_action(first, "search[Albert Einstein]")
    assert run_action(second, "lookup[Ulm]").observation.startswith("No page is open")
    assert run_action(first, "lookup[Ulm]").observation == "(Result 1 / 1) Einstein was born in Ulm."


def test_wikipedia_api_error_is_not_cached_and_5xx_is_retried(server, tmp_path, sleeps):
    """A MediaWiki error object is a failure observation and is not cached; a 503 is retried (shared client)."""
    server.serve(Reply({"error": {"code": "maxlag", "info": "Waiting for a database server: 5 seconds lagged"}}),
                 Reply("", 503), Reply(wiki_page("Albert Einstein", EINSTEIN)))
    tools = wiki_toolkit(server, tmp_path, sleeps).new_episode()
    failed = run_action(tools, "search[Albert Einstein]")
    assert failed.status == "tool_error" and "5 seconds lagged" in failed.observation
    assert run_action(tools, "search[Albert Einstein]").observation.startswith("Albert Einstein (14 March 1879")
    assert len(server.requests) == 3 and sleeps == [0.25]


# --- hostile servers (issue 13) ------------------------------------------------------------------------------


def test_item1_a_dripping_reply_fails_at_its_deadline(server, tmp_path, sleeps, monkeypatch):
    """A server sending one byte every 0.1 s (each read well within the timeout) cannot hold a call open: the whole
    reply has a deadline, so the call fails within about timeout_s instead of reading for minutes."""
    server.serve(Reply(google({"answer": "slow " * 100}), drip=0.1))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch, timeout_s=0.5, retries=0)
    results: list = []
    started = time.monotonic()
    caller = threading.Thread(target=lambda: results.append(search(toolkit, "q")), daemon=True)
    caller.start()
    caller.join(timeout=5)
    assert results, "the call was still reading the dripping reply after 5 s"
    assert time.monotonic() - started < 3
    assert results[0].status == "tool_error" and "no complete reply within 0.5s" in results[0].observation


def test_item5_a_50mb_reply_is_refused_unread_and_uncached(server, tmp_path, sleeps, monkeypatch):
    """A 50 MB reply is cut off at max_reply_bytes: a failure observation, nothing cached, not retried."""
    server.serve(Reply(google({"answer": "x" * 50_000_000})))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    result = search(toolkit, "q")
    assert result.status == "tool_error" and "larger than 4,194,304 bytes" in result.observation
    assert len(server.requests) == 1 and not list((tmp_path / "cache").rglob("*.json"))


def test_item5_observations_are_capped_with_the_cut_marked(server, tmp_path, sleeps, monkeypatch):
    """A long answer, the echo of a 1 MB search argument and of a 1 MB invalid action all become observations of at
    most 4,000 characters plus a note of how much was cut; max_chars changes the cap."""
    server.serve(Reply(google({"answer": "a" * 100_000})))
    long = search(serpapi_toolkit(server, tmp_path, sleeps, monkeypatch), "q").observation
    assert long == "a" * 4000 + " [... 96,000 more characters cut]"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"title": "Paris", "text": "Paris is the capital of France."}) + "\n")
    tools = Toolkit(ToolsConfig(search="corpus", corpus=CorpusConfig(path=str(corpus)))).new_episode()
    echoed = run_action(tools, f"search[{'w' * 1_000_000}]").observation
    assert echoed.startswith("No results found for 'www") and echoed.endswith(" [... 996,024 more characters cut]")
    invalid = run_action(tools, "z" * 1_000_000).observation
    assert invalid.startswith("Invalid action 'zzz") and len(invalid) < 4100
    short = run_action({"search": FunctionTool("search", "", lambda _: "b" * 50)}, "search[x]", max_chars=10)
    assert short.observation == "b" * 10 + " [... 40 more characters cut]"


@pytest.mark.parametrize("empty", [{}, {"search_parameters": {"q": "q"}}])
def test_item10_a_reply_that_is_no_result_page_is_not_cached(server, tmp_path, sleeps, monkeypatch, empty):
    """HTTP 200 with `{}` (or any object without search_metadata) is a failure, asked again next time, not cached
    as "No results"."""
    server.serve(Reply(empty), Reply(google({"answer": "real"})))
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    failed = search(toolkit, "q")
    assert failed.status == "tool_error" and "not a result page" in failed.observation
    assert search(toolkit, "q").observation == "real" and len(server.requests) == 2


def test_item10_a_cached_reply_the_check_refuses_is_asked_again(server, tmp_path, sleeps, monkeypatch):
    """A `{}` cached before replies were checked (by an older agentjax) is not served forever as "No results": the
    cache hit is checked like a fresh reply, the server is asked again, and its good reply replaces the entry."""
    toolkit = serpapi_toolkit(server, tmp_path, sleeps, monkeypatch)
    client = toolkit.new_episode()["search"].client
    client.cache.put({"tool": client.tool, "url": client.base_url,
                      "params": {"engine": "google", "q": "q", "gl": "us", "hl": "en"}}, {})
    server.serve(Reply(google({"answer": "real"})))
    assert search(toolkit, "q").observation == "real" and len(server.requests) == 1
    assert search(toolkit, "q").observation == "real" and len(server.requests) == 1


def test_item10_an_empty_wikipedia_reply_is_not_cached(server, tmp_path, sleeps):
    """`{}` from MediaWiki is a failure, not a missing page: the next call asks again and finds the page."""
    server.serve(Reply({}), Reply(wiki_page("Albert Einstein", EINSTEIN)))
    tools = wiki_toolkit(server, tmp_path, sleeps).new_episode()
    failed = run_action(tools, "search[Albert Einstein]")
    assert failed.status == "tool_error" and "not a query result" in failed.observation
    assert run_action(tools, "search[Albert Einstein]").observation.startswith("Albert Einstein (14 March")


@pytest.mark.parametrize("key", ['sk-back\\slash-9f8e', 'sk-ключ-9f8e', 'sk-"quoted"-9f8e'])
def test_item10_keys_that_json_escapes_are_still_redacted(server, tmp_path, sleeps, monkeypatch, caplog, key):
    """A key with a backslash, non-ASCII letters or a quote, echoed by the server inside JSON (where it appears
    escaped), is redacted from observations, error messages, logs and the cache in every form."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SERPAPI_API_KEY", key)
    config = ToolsConfig(search="serpapi", serpapi=SerpApiConfig(base_url=server.url),
                         http=HttpConfig(retries=0, cache_dir=str(tmp_path / "cache")))
    toolkit = Toolkit(config, sleep=sleeps.append)
    server.serve(Reply(google({"answer": f"the key is {key}"})), Reply({"error": f"Invalid API key {key}"}, status=401))
    texts = [search(toolkit, "one").observation, search(toolkit, "two").observation]
    texts += [p.read_text(encoding="utf-8") for p in (tmp_path / "cache").rglob("*.json")]
    texts.append(caplog.text)
    assert all(r["api_key"] == key for r in server.requests)
    assert texts[0] == "the key is ***" and "HTTP 401" in texts[1] and "***" in texts[1]
    escaped = {key, json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1], quote(key), quote_plus(key)}
    for text in texts:
        assert not any(form in text for form in escaped), text


def test_item10_an_error_body_escaping_the_key_its_own_way_is_redacted(server, tmp_path, sleeps, monkeypatch):
    """An HTTP error whose JSON body escapes the key in a form agentjax never registered (upper-case `\\u` hex, `\\/`)
    reaches the observation without the key: the body is redacted as decoded JSON."""
    key = "sk-é/9f8e"
    monkeypatch.setenv("SERPAPI_API_KEY", key)
    config = ToolsConfig(search="serpapi", serpapi=SerpApiConfig(base_url=server.url), http=HttpConfig(retries=0))
    toolkit = Toolkit(config, sleep=sleeps.append)
    server.serve(Reply('{"error": "Invalid API key sk-\\u00E9\\/9f8e"}', status=401))
    observation = search(toolkit, "q").observation
    assert "HTTP 401" in observation and "Invalid API key ***" in observation and "9f8e" not in observation
