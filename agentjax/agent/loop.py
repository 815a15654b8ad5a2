"""Run many agent episodes at once: generate a reply, call its tool, extend the cache, continue.

Each batch row holds one episode. The row's KV cache always holds exactly the token ids the host
has recorded for it (`Slot.ids`). After every reply the whole conversation is re-rendered with the
training template; the cache keeps the longest common prefix and is extended with the rest (the
reply's canonical tokens, EOS, the observation and the next reply's opening). So the cache ends
where the training rendering continues, nothing is re-prefilled but the last reply, and the
token ids equal the training renderer's. A finished row takes the next question at once.

A prompt shared by many episodes (a system prompt with worked examples) is computed once: a row whose next
prompt begins with what another row's cache holds gets that row's cache copied, and a new episode starts from
whatever its row held before.

Rows do not wait for each other: a decode returns as soon as a few replies have ended (the decoder's small
extend program's rows), those rows act and take their observations, and the next decode continues the others
mid-reply beside them.
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import jax
import numpy as np

from agentjax.agent.decode import CONTEXT_FULL, RUNNING, STOP_REASONS, Decoder, Sampling
from agentjax.agent.methods import EpisodeStart, extract_action, stated_answer
from agentjax.data.conversation import Conversation, Turn
from agentjax.data.templates import Template
from agentjax.tasks.base import Question
from agentjax.tools.base import OBSERVATION_MAX_CHARS, Tool, ToolResult, run_action


class EpisodeStatus(str, enum.Enum):
    """Where an episode is; transcripts store the value (`"finished"`, ...)."""

    RUNNING = "running"
    FINISHED = "finished"  # the agent called finish (or answered without an action, when that counts)
    MAX_STEPS = "max_steps"
    CONTEXT_LIMIT = "context_limit"  # the KV cache is full


@dataclass(frozen=True)
class LoopSettings:
    """Episode limits and generation settings."""

    max_steps: int = 11  # replies per episode (FireAct: 11, ReAct: 7)
    sampling: Sampling = Sampling()
    tool_timeout_s: float = 60.0  # an observation says so when a tool takes longer
    observation_max_chars: int = OBSERVATION_MAX_CHARS  # longer observations are cut (the cut is marked)
    reply_without_action: str = "invalid"  # "invalid": tell the agent; "answer": it states the final answer
    seed: int = 0


@dataclass
class ToolCall:
    action: str | None
    observation: str
    status: str
    seconds: float


@dataclass
class Episode:
    """One question's episode; what transcripts.jsonl stores, one line each."""

    question: Question
    conversation: Conversation
    tools: Mapping[str, Tool]
    status: EpisodeStatus = EpisodeStatus.RUNNING
    prediction: str | None = None
    steps: int = 0
    calls: list[ToolCall] = field(default_factory=list)
    stop_reasons: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # the token ids in this row's KV cache
    reply: list[int] = field(default_factory=list)  # the tokens of a reply still being generated
    generated_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def record(self) -> dict:
        q = self.question
        return dict(
            id=q.id, question=q.question, answers=list(q.answers), kind=q.kind, meta=dict(q.meta),
            prediction=self.prediction, status=self.status.value, steps=self.steps,
            turns=[{"role": t.role, "content": t.content} for t in self.conversation.turns],
            tool_calls=[vars(c) for c in self.calls], stop_reasons=self.stop_reasons,
            generated_tokens=self.generated_tokens, context_tokens=len(self.ids), seconds=self.seconds,
        )


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    mismatch = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(mismatch[0]) if mismatch.size else n


class AgentLoop:
    """Episodes over one Decoder; `tools_for(question)` gives each episode fresh tool objects.

    A decode returns once `refill_rows` replies have ended (default: the decoder's `refill_rows`; the batch size
    makes every reply of a batch wait for its longest).
    """

    def __init__(self, decoder: Decoder, template: Template, start: EpisodeStart,
                 tools_for: Callable[[Question], Mapping[str, Tool]], settings: LoopSettings = LoopSettings(),
                 refill_rows: int | None = None):
        self.decoder, self.template, self.start, self.tools_for, self.settings = decoder, template, start, tools_for, settings
        self.tokenizer = template.tokenizer
        self.refill_rows = refill_rows

    def run(self, questions: Iterable[Question], on_done: Callable[[Episode], None]) -> None:
        """Play every question; `on_done(episode)` is called as each one ends (in completion order)."""
        queue = iter(questions)
        rows: list[Episode | None] = [None] * self.decoder.batch
        cache, logits = self.decoder.warm_up(*self.decoder.new_state())
        window, key = None, jax.random.key(self.settings.seed)
        held: list[list[int]] = [[] for _ in rows]  # the ids each cache row holds, whichever episode put them there
        while True:
            for r in range(len(rows)):
                if rows[r] is None and (q := next(queue, None)) is not None:
                    tools = self.tools_for(q)
                    rows[r] = Episode(q, self.start.conversation(q.question, q.id, tools), tools, ids=held[r])
            if all(e is None for e in rows):
                return
            cache, logits = self._sync_caches(rows, cache, logits, on_done)
            if all(e is None for e in rows):
                continue
            replies, cache, logits, window, key = self._generate(rows, cache, logits, window, key)
            held = [ep.ids if ep else ids for ep, ids in zip(rows, held)]
            self._act(rows, replies, on_done)

    # -- the three phases of a step ---------------------------------------------------------------

    def _sync_caches(self, rows, cache, logits, on_done):
        """Bring every row's cache to the template's rendering of its conversation (the next reply's prompt)."""
        targets = {}
        for r, ep in enumerate(rows):
            if ep is None or ep.reply:  # a row mid-reply already holds its tokens
                continue
            target = self.template.prompt(ep.conversation)
            if len(target) >= self.decoder.max_len - 1:
                self._end(rows, r, EpisodeStatus.CONTEXT_LIMIT, on_done)
                continue
            targets[r] = target
        copies = shared_prefix_sources(rows, targets)
        cache, logits = self._extend_to(rows, {r: t for r, t in targets.items() if r not in copies}, cache, logits)
        if copies:  # the sources now hold their targets
            cache = self.decoder.copy_rows(cache, list(copies.values()), list(copies))
            for r, source in copies.items():
                rows[r].ids = list(rows[source].ids)
            cache, logits = self._extend_to(rows, {r: targets[r] for r in copies}, cache, logits)
        return cache, logits

    def _extend_to(self, rows, targets: dict[int, list[int]], cache, logits):
        """Extend each row r in `targets` from what its cache holds (rows[r].ids) to targets[r]."""
        news, starts = [[] for _ in rows], [0] * len(rows)
        for r, target in targets.items():
            keep = min(common_prefix(rows[r].ids, target), len(target) - 1)  # >= 1 new token: fresh logits
            news[r], starts[r] = target[keep:], keep
            rows[r].ids = target
        if any(news):
            cache, logits = self.decoder.extend(cache, logits, news, starts)
        return cache, logits

    def _generate(self, rows, cache, logits, window, key):
        """Decode until a few replies end: (the ended ones as {row: (reply text, stop reason)}, decode state)."""
        active = np.array([ep is not None for ep in rows])
        resume = np.array([ep is not None and bool(ep.reply) for ep in rows])
        lengths = np.array([len(ep.ids) if ep else 0 for ep in rows])
        budget = np.array([self.decoder.max_new - len(ep.reply) if ep else 0 for ep in rows])
        sampling = [self.settings.sampling] * len(rows)
        out = self.decoder.decode(cache, logits, lengths, active, sampling, key, budget, window=window, resume=resume,
                                  min_stopped=self.refill_rows or self.decoder.refill_rows)
        tokens, counts, reasons = jax.device_get((out.tokens, out.count, out.reason))
        replies = {}
        for r, ep in enumerate(rows):
            if ep is None:
                continue
            generated = tokens[r, : counts[r]].tolist()
            ep.generated_tokens += len(generated)
            if reasons[r] == RUNNING:  # every token is in the cache; the next decode goes on from here
                ep.ids, ep.reply = ep.ids + generated, ep.reply + generated
                continue
            ep.ids = ep.ids + generated[:-1]  # the last sampled token was not written to the cache
            text = self.tokenizer.decode(ep.reply + generated)
            ep.reply = []
            replies[r] = (cut_at_stop(text, self.template.stop_strings), int(reasons[r]))
        return replies, out.cache, out.logits, out.window, out.key

    def _act(self, rows, replies, on_done):
        """Record each reply, run its action on a tool thread, and append the observations."""
        pending = {}
        for r, (reply, reason) in replies.items():
            ep = rows[r]
            ep.stop_reasons.append(STOP_REASONS[reason])
            ep.conversation = ep.conversation.append(Turn("assistant", self.template.reply_content(reply)))
            ep.steps += 1
            if reason == CONTEXT_FULL:
                self._end(rows, r, EpisodeStatus.CONTEXT_LIMIT, on_done)
                continue
            action = extract_action(ep.conversation.turns[-1].content)
            if action is None and self.settings.reply_without_action == "answer":
                ep.prediction = stated_answer(ep.conversation.turns[-1].content)
                self._end(rows, r, EpisodeStatus.FINISHED, on_done)
                continue
            pending[r] = (action, start_tool_call(ep.tools, action or ep.conversation.turns[-1].content,
                                                  self.settings.observation_max_chars))
        for r, (action, future) in pending.items():
            ep = rows[r]
            try:
                result, seconds = future.result(timeout=self.settings.tool_timeout_s)
            except cf.TimeoutError:
                name = action.split("[", 1)[0] if action else "tool"
                result = ToolResult(f"The {name} tool failed: no answer within {self.settings.tool_timeout_s:g} s.",
                                    "tool_error")
                seconds = self.settings.tool_timeout_s
            ep.calls.append(ToolCall(action, result.observation, result.status, seconds))
            if result.status == "finished":
                ep.prediction = result.action.argument
                self._end(rows, r, EpisodeStatus.FINISHED, on_done)
            elif ep.steps >= self.settings.max_steps:
                self._end(rows, r, EpisodeStatus.MAX_STEPS, on_done)
            else:
                ep.conversation = ep.conversation.append(Turn("tool", result.observation))

    # -- helpers --------------------------------------------------------------------------------------

    def _end(self, rows, r, status: EpisodeStatus, on_done):
        ep = rows[r]
        ep.status = status
        ep.seconds = time.perf_counter() - ep.started
        rows[r] = None
        on_done(ep)


MIN_SHARED_TOKENS = 64  # a copied cache row must spare at least this much prefill


def shared_prefix_sources(rows, targets: dict[int, list[int]]) -> dict[int, int]:
    """{row: source row} for rows whose target begins with MIN_SHARED_TOKENS more of what the source holds (or
    will hold once extended to its own target) than of what the row itself holds."""
    holding = {r: ep.ids for r, ep in enumerate(rows) if ep is not None and r not in targets}
    sources = {}
    for r, target in targets.items():
        own = common_prefix(rows[r].ids, target)
        shared, source = max(((common_prefix(ids, target), s) for s, ids in holding.items()), default=(0, None))
        if shared >= own + MIN_SHARED_TOKENS:
            sources[r] = source
        else:
            holding[r] = target
    return sources


def cut_at_stop(text: str, stop_strings: tuple[str, ...]) -> str:
    """The reply before the first stop string: nothing after a stop is kept."""
    cuts = [i for s in stop_strings if (i := text.find(s)) >= 0]
    return text[: min(cuts)] if cuts else text


def start_tool_call(tools: Mapping[str, Tool], action: str, max_chars: int) -> cf.Future:
    """Run the action on its own daemon thread; the future gives (result, seconds). A call abandoned at its timeout
    may go on in the background, but it can never keep the process from exiting (a pool's threads would)."""
    future: cf.Future = cf.Future()

    def call() -> None:
        t0 = time.perf_counter()
        try:
            future.set_result((run_action(tools, action, max_chars), time.perf_counter() - t0))
        except BaseException as e:  # run_action turns tool errors into results; this is a bug, shown to the caller
            future.set_exception(e)

    threading.Thread(target=call, name="agentjax-tool-call", daemon=True).start()
    return future
