"""GET-JSON for networked tools: a deadline on each whole reply, a size limit, retries with exponential backoff, an
on-disk cache, secrets kept out of logs, errors, cache files and results."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Mapping
from urllib.parse import quote, quote_plus

import requests

from agentjax.tools.base import ToolError
from agentjax.tools.cache import DiskCache
from agentjax.tools.config import HttpConfig

log = logging.getLogger(__name__)
REDACTED = "***"
_CHUNK = 1 << 16


class _Late(Exception):
    """The reply did not arrive in full before the request's deadline."""


class _SecretRedactor(logging.Filter):
    """Rewrites log records of the HTTP libraries (which log full URLs) so no registered secret appears."""

    def __init__(self):
        super().__init__()
        self.secrets: tuple[str, ...] = ()

    def add(self, secret: str) -> None:
        """Redact `secret` from now on in every form a URL or a JSON text may carry it (replaced whole, so readers
        need no lock); longest forms first, so no form is left half-replaced by a shorter one."""
        forms = {secret, quote_plus(secret), quote(secret), json.dumps(secret)[1:-1],
                 json.dumps(secret, ensure_ascii=False)[1:-1]}
        self.secrets = tuple(sorted(set(self.secrets) | forms, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def redact_json(self, value: Any) -> Any:
        """`value` (decoded JSON) with every string, keys included, redacted: the secret is matched as text, not
        through an encoding that escapes it (JSON turns `\\` and non-ASCII characters into escapes)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_json(v) for v in value]
        if isinstance(value, dict):
            return {self.redact(k): self.redact_json(v) for k, v in value.items()}
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_REDACTOR = _SecretRedactor()
for _name in ("urllib3.connectionpool", "urllib3.util.retry"):  # the loggers that print request URLs
    logging.getLogger(_name).addFilter(_REDACTOR)


class JsonHttpClient:
    """One server endpoint: `get(params)` returns its JSON reply, from the cache when this request was seen before.

    `secret_params` (e.g. an API key) are sent with each request but left out of the cache key and removed from
    anything this client returns, raises, logs or stores. Thread-safe: each thread gets its own HTTP session.
    """

    def __init__(self, tool: str, base_url: str, http: HttpConfig, secret_params: Mapping[str, str] = {},
                 sleep: Callable[[float], None] = time.sleep):
        self.tool, self.base_url, self.http = tool, base_url, http
        self.secret_params = dict(secret_params)
        self.cache = DiskCache(http.cache_dir) if http.cache_dir else None
        self.sleep = sleep
        self._local = threading.local()
        for value in filter(None, self.secret_params.values()):
            _REDACTOR.add(value)

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.headers["User-Agent"] = self.http.user_agent
        return self._local.session

    def get(self, params: Mapping[str, Any], check: Callable[[Any], None] | None = None) -> Any:
        """The JSON reply to `params`; ToolError (readable, secret-free) when every attempt failed.

        `check(reply)` may raise ToolError for a well-formed but failed reply (an API error object): such replies
        are not cached, so the next call asks again.
        """
        key = {"tool": self.tool, "url": self.base_url, "params": dict(params)}
        if self.cache is not None and (hit := self.cache.get(key)) is not None and _passes(check, hit):
            return hit  # a cached reply the check now refuses (cached before it existed) is asked again
        failure, requested_wait = "", 0.0
        for attempt in range(self.http.retries + 1):
            if attempt:
                self.sleep(self._delay(attempt, requested_wait))
            data, failure, requested_wait = self._attempt({**params, **self.secret_params})
            if not failure:
                data = _REDACTOR.redact_json(data)
                if check is not None:
                    check(data)
                if self.cache is not None:
                    self.cache.put(key, data)
                return data
            log.info("%s: %s (attempt %d of %d)", self.tool, failure, attempt + 1, self.http.retries + 1)
        raise ToolError(f"{self.tool} is unavailable: {failure} (after {self.http.retries + 1} attempts)")

    def _attempt(self, params: dict) -> tuple[Any, str, float]:
        """One request: (data, "", 0) on success; (None, reason, server-requested wait) on a retryable failure.

        The whole reply must arrive within `timeout_s` (a server dripping bytes cannot hold a call open) and be at
        most `max_reply_bytes` long (a huge reply is refused, not retried: it would be as huge the next time).
        """
        deadline = time.monotonic() + self.http.timeout_s
        try:
            with self._session().get(self.base_url, params=params, timeout=self.http.timeout_s, stream=True) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    return None, f"HTTP {status}", _retry_after(response)
                body = self._read_body(response, deadline)
        except (requests.Timeout, _Late):
            return None, f"no complete reply within {self.http.timeout_s:g}s", 0.0
        except requests.RequestException as e:
            return None, f"connection failed: {_REDACTOR.redact(str(e))[:300]}", 0.0
        if status >= 400:
            detail = _redacted_text(body)[:200]
            raise ToolError(f"{self.tool} refused the request: HTTP {status}: {detail}")
        try:
            return json.loads(body), "", 0.0
        except ValueError:
            return None, "the reply was not valid JSON", 0.0

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        """The reply's (decompressed) bytes, read as they arrive; _Late past `deadline`, ToolError past the size limit."""
        limit = self.http.max_reply_bytes
        too_large = ToolError(f"{self.tool} sent a reply larger than {limit:,} bytes (http.max_reply_bytes); not used")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        while chunk := response.raw.read1(_CHUNK, decode_content=True):  # returns what one socket read brought
            body += chunk
            if len(body) > limit:
                raise too_large
            if time.monotonic() > deadline:
                raise _Late()
        return bytes(body)

    def _delay(self, attempt: int, requested: float) -> float:
        """Exponential backoff (backoff_s, 2x, 4x, ...), at least what the server asked for, at most backoff_max_s."""
        return min(self.http.backoff_max_s, max(self.http.backoff_s * 2 ** (attempt - 1), requested))


def _passes(check: Callable[[Any], None] | None, reply: Any) -> bool:
    """Whether `reply` passes `check` (no check passes everything)."""
    try:
        if check is not None:
            check(reply)
    except ToolError:
        return False
    return True


def _redacted_text(body: bytes) -> str:
    """An error reply as secret-free text: a JSON body is redacted decoded (so no escaping of the secret, such as
    `\\u00E9` or `\\/`, can hide it) and re-encoded; any other body is redacted as text."""
    text = body.decode("utf-8", errors="replace")
    try:
        return json.dumps(_REDACTOR.redact_json(json.loads(text)), ensure_ascii=False)
    except ValueError:
        return _REDACTOR.redact(text)


def _retry_after(response: requests.Response) -> float:
    """The server's Retry-After in seconds, when given as a number; else 0."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return 0.0
