"""The episode loop: kept cache == re-prefill, replay == training ids, no recompiles, tool failures, resume."""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import jax
import numpy as np
import pytest
from flax import nnx

from agentjax.agent.config import EvalConfig
from agentjax.agent.decode import EOS, Decoder
from agentjax.agent.evaluate import CONFIG_RECORD, TRANSCRIPTS, evaluate, read_transcripts
from agentjax.agent import loop as loop_module
from agentjax.agent.loop import AgentLoop, LoopSettings
from agentjax.agent.methods import EpisodeStart, extract_action, stated_answer
from agentjax.configlib import ConfigError, from_dict
from agentjax.data.formats import read_conversations
from agentjax.data.templates import get_template, template_markers
from agentjax.data.tokenizer import train_sentencepiece
from agentjax.model import Llama, preset
from agentjax.perf import CompileCounter
from agentjax.tasks.base import Question
from agentjax.world.build import WorldConfig, build_world
from agentjax.world.task import WorldTask
from agentjax.world.tools import WorldToolkit
from agentjax.tools.base import FunctionTool
from agentjax.tools.finish import Finish
from agentjax.util.errors import DataError
from data_support import FIREACT

SMALL_WORLD = WorldConfig(countries=4, cities=8, organisations=6, people=24, eval_questions_per_kind=6,
                          train_questions_per_kind=6)


@pytest.fixture(scope="module")
def template(tok):
    return get_template("react", tok)


@pytest.fixture(scope="module")
def decoder(tok, template):
    model = Llama(preset("tiny", vocab_size=tok.vocab_size), rngs=nnx.Rngs(0))
    return Decoder(model, tok, template.stop_strings, batch=4, max_len=512, max_new_tokens=24, buckets=(16, 64, 256))


@pytest.fixture(scope="module")
def world_questions():
    world = build_world(SMALL_WORLD)
    toolkit = WorldToolkit(world, "test")
    return WorldTask(world).load(split="test"), toolkit


def _play(loop, questions):
    episodes = {}
    loop.run(questions, lambda ep: episodes.__setitem__(ep.question.id, ep))
    return episodes


class RePrefillLoop(AgentLoop):
    """The reference: forget the cache before every reply and prefill the whole conversation again."""

    def _sync_caches(self, rows, cache, logits, on_done):
        for ep in rows:
            if ep is not None and not ep.reply:  # a reply in progress is continued, not re-prefilled
                ep.ids = []
        return super()._sync_caches(rows, cache, logits, on_done)


def test_kept_cache_generates_what_re_prefilling_generates(decoder, template, world_questions):
    """Multi-turn greedy episodes give the same replies whether the cache is kept or rebuilt every turn."""
    questions, toolkit = world_questions
    settings = LoopSettings(max_steps=3)
    args = (decoder, template, EpisodeStart(), lambda q: toolkit.new_episode(), settings)
    kept = _play(AgentLoop(*args), questions[:6])
    rebuilt = _play(RePrefillLoop(*args), questions[:6])
    assert kept.keys() == rebuilt.keys() and len(kept) == 6
    for qid, ep in kept.items():
        assert ep.conversation.turns == rebuilt[qid].conversation.turns
        assert ep.ids == rebuilt[qid].ids
        assert ep.steps > 1  # several turns, so the cache really was kept across tool calls


def test_rows_refilled_as_replies_end_play_what_rows_waiting_for_the_batch_play(template, world_questions):
    """Continuous batching changes no reply: a decode that returns after every ended reply (the others continued
    mid-reply in later calls, beside rows taking observations) gives the conversations and cache ids of decodes
    that wait for the whole batch. Greedy, so any lost or repeated token, logit or stop-string byte would show."""
    questions, toolkit = world_questions
    model = Llama(preset("tiny", vocab_size=template.tokenizer.vocab_size), rngs=nnx.Rngs(0))
    # Replies of a random model end at different lengths when a common letter ends them too
    ragged = Decoder(model, template.tokenizer, template.stop_strings + ("e",), batch=4, max_len=512,
                     max_new_tokens=24, buckets=(16, 64, 256))
    args = (ragged, template, EpisodeStart(), lambda q: toolkit.new_episode(), LoopSettings(max_steps=3))
    calls = []

    class Counted(AgentLoop):
        def _generate(self, rows, *state):
            replies, *state = super()._generate(rows, *state)
            calls.append(sum(ep is not None and bool(ep.reply) for ep in rows))  # rows left mid-reply
            return replies, *state

    continuous = _play(Counted(*args, refill_rows=1), questions[:8])
    assert any(calls)  # some replies really were split across decodes
    waiting = _play(AgentLoop(*args, refill_rows=ragged.batch), questions[:8])
    assert continuous.keys() == waiting.keys() and len(continuous) == 8
    for qid, ep in continuous.items():
        assert ep.conversation.turns == waiting[qid].conversation.turns
        assert ep.ids == waiting[qid].ids and ep.generated_tokens == waiting[qid].generated_tokens


def test_a_shared_system_prompt_is_computed_once_and_changes_no_reply(decoder, template, world_questions,
                                                                      monkeypatch):
    """With a long system prompt every episode begins with, one row computes it and the other rows get its cache
    copied (later episodes reuse what their row holds): several times fewer tokens are prefilled, and the greedy
    conversations and cache ids equal those of rows that prefill every prompt themselves."""
    questions, toolkit = world_questions
    start = EpisodeStart(system_prompt=" ".join(f"Rule {i}: search before you answer." for i in range(10)))
    args = (decoder, template, start, lambda q: toolkit.new_episode(), LoopSettings(max_steps=2))
    prefilled = []

    def counted(cls):
        class Counted(cls):
            def _extend_to(self, rows, targets, cache, logits):
                prefilled.extend(len(t) - min(loop_module.common_prefix(rows[r].ids, t), len(t) - 1)
                                 for r, t in targets.items())
                return super()._extend_to(rows, targets, cache, logits)
        return Counted

    shared = _play(counted(AgentLoop)(*args), questions[:8])
    shared_tokens, prefilled[:] = sum(prefilled), []
    monkeypatch.setattr(loop_module, "shared_prefix_sources", lambda rows, targets: {})
    alone = _play(counted(RePrefillLoop)(*args), questions[:8])
    assert 100 < len(template.prompt(start.conversation(questions[0].question))) < decoder.max_len - 250  # room for two steps
    assert shared_tokens * 3 < sum(prefilled)
    assert shared.keys() == alone.keys() and len(shared) == 8
    for qid, ep in shared.items():
        assert ep.conversation.turns == alone[qid].conversation.turns and ep.ids == alone[qid].ids


class ScriptedLoop(AgentLoop):
    """Plays recorded replies instead of generating; the cache is extended exactly as for generated ones.

    Before each reply it notes the ids in the row's cache and the logits the cache produced.
    """

    def __init__(self, *args, replies, **kwargs):
        super().__init__(*args, **kwargs)
        self.replies, self.seen = replies, {}

    def _generate(self, rows, cache, logits, window, key):
        out = {}
        for r, ep in enumerate(rows):
            if ep is not None:
                self.seen.setdefault(ep.question.id, []).append((list(ep.ids), np.asarray(logits[r])))
                out[r] = (self.replies[ep.question.id][ep.steps], EOS)
        return out, cache, logits, window, key


def test_replaying_fireact_trajectories_reproduces_the_training_ids(shared_data, decoder, template):
    """Recorded replies and observations played through the loop put exactly the training renderer's ids in the
    cache at every step, and the cache's keys/values are those of the ids (its logits equal a full forward)."""
    convs = [c.replace(id=f"fireact-{i}") for i, c in
             enumerate(read_conversations(shared_data / FIREACT / "hotpotqa.jsonl", "fireact")) if i < 6]
    replies = {c.id: [t.content for t in c.turns if t.role == "assistant"] for c in convs}
    observations = {c.id: [t.content for t in c.turns if t.role == "tool"] for c in convs}
    questions = [Question(c.id, c.turns[0].content, ("?",)) for c in convs]

    def tools_for(q):
        recorded = iter(observations[q.id])
        return {"search": FunctionTool("search", "recorded", lambda _: next(recorded)), "finish": Finish()}

    loop = ScriptedLoop(decoder, template, EpisodeStart(), tools_for, LoopSettings(max_steps=11), replies=replies)
    episodes = _play(loop, questions)
    forward = jax.jit(lambda params, ids: nnx.merge(decoder.graphdef, params)(ids))
    for conv in convs:
        ep = episodes[conv.id]
        final_reply = max(i for i, t in enumerate(conv.turns) if t.role == "assistant")
        played = conv.turns[: final_reply + 1]
        assert ep.status == "finished"
        assert [(t.role, t.content) for t in ep.conversation.turns] == [(t.role, t.content) for t in played]
        training = template.encode(conv.replace(turns=played)).ids.tolist()
        assert len(loop.seen[conv.id]) == len(replies[conv.id])
        for ids, logits in loop.seen[conv.id]:
            assert training[: len(ids)] == ids
            padded = np.zeros((1, decoder.max_len), np.int32)
            padded[0, : len(ids)] = ids  # causal: padding after the ids cannot change their logits
            full = np.asarray(forward(decoder.params, padded))[0, len(ids) - 1]
            np.testing.assert_allclose(logits, full, atol=1e-4)


def test_a_whole_evaluation_compiles_nothing_after_warm_up(decoder, template, world_questions):
    """After a first batch of episodes, 20 more compile no new program."""
    questions, toolkit = world_questions
    loop = AgentLoop(decoder, template, EpisodeStart(), lambda q: toolkit.new_episode(), LoopSettings(max_steps=4))
    _play(loop, questions[:4])
    with CompileCounter() as compiles:
        played = _play(loop, questions[4:24])
    assert len(played) == 20 and compiles.count == 0


def test_a_hanging_tool_times_out_into_an_observation_and_the_episode_goes_on(decoder, template):
    """A tool that does not answer within the timeout yields a failure observation; the next reply still runs."""
    release = threading.Event()
    hanging = FunctionTool("search", "never answers", lambda _: release.wait(10) and "late")
    question = Question("q", "What is the capital of Nowhere?", ("x",))
    replies = {"q": ["Thought: search.\nAction: search[Nowhere]", "Thought: give up.\nAction: finish[x]"]}
    loop = ScriptedLoop(decoder, template, EpisodeStart(), lambda q: {"search": hanging, "finish": Finish()},
                        LoopSettings(max_steps=5, tool_timeout_s=0.05), replies=replies)
    try:
        ep = _play(loop, [question])["q"]
    finally:
        release.set()
    assert ep.status == "finished" and ep.prediction == "x"
    assert ep.calls[0].status == "tool_error" and "search tool failed" in ep.calls[0].observation
    assert ep.conversation.turns[2].content == ep.calls[0].observation  # the agent saw the failure


def test_actions_are_read_from_react_and_chat_replies():
    """`Action: x[y]` lines and a trailing chat-style call are both read; plain text has no action."""
    assert extract_action("Thought: a\nAction: search[Foo Bar]") == "search[Foo Bar]"
    assert extract_action("I should look it up.\nsearch[Foo]") == "search[Foo]"
    assert extract_action("The answer is 4.") is None


def test_a_chat_reply_states_its_answer_and_a_system_prompt_lists_the_episodes_own_tools(world_questions):
    """A reply without a tool call answers after its last "the answer is" (else the whole reply is the answer),
    and `{tools}` in the system prompt becomes the tools this episode was given, not the toolkit's full set."""
    assert stated_answer("Search found it: so the answer is Lake Tumo.") == "Lake Tumo"
    assert stated_answer("First, 3. The answer is 4, so the answer is 5.") == "5"
    assert stated_answer("1, 2, 3.") == "1, 2, 3"
    _, toolkit = world_questions
    tools = {k: v for k, v in toolkit.new_episode().items() if k != "calculate"}
    system = EpisodeStart("Tools:\n{tools}\nGo.").conversation("q?", "q1", tools).turns[0].content
    assert "search[" in system and "lookup[" in system
    assert "calculate" not in system and "finish[" not in system  # finish ends episodes: not a tool to list


def test_an_interrupted_evaluation_resumes_without_redoing_or_duplicating(tmp_path, world_questions):
    """Killed mid-write (a torn last line): rerunning completes the set, every question exactly once."""
    questions, _ = world_questions
    train_sentencepiece([q.question for q in questions] * 20, 512, tmp_path / "tok.model", user_symbols=template_markers())
    cfg = from_dict(EvalConfig, dict(
        model={"preset": "tiny"}, tokenizer=str(tmp_path / "tok.model"), task="world", split="test", limit=8,
        task_options=vars(SMALL_WORLD), max_steps=2, output_dir=str(tmp_path / "eval"), mesh={"num_devices": 1},
        generation=dict(batch_size=4, max_len=256, max_new_tokens=12, buckets=[16, 64, 256])))
    evaluate(cfg, progress=False)
    path = tmp_path / "eval" / TRANSCRIPTS
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    summary = evaluate(cfg, progress=False)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(q.id for q in questions[:8]) and len(set(ids)) == 8
    assert [json.loads(line) for line in lines[:3]] == records[:3]  # finished episodes were not redone
    assert summary["n"] == 8 and summary["episodes_this_run"] == 5
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["n"] == 8
    with pytest.raises(ConfigError, match="max_steps"):  # another setting must not resume these transcripts
        evaluate(replace(cfg, max_steps=3), progress=False)
    (tmp_path / "eval" / CONFIG_RECORD).write_bytes(b'{"task": "w\xf6rld"}')  # a damaged record is named, not a traceback
    with pytest.raises(DataError, match=rf"{CONFIG_RECORD}:1: not valid UTF-8: byte 0xf6"):
        evaluate(cfg, progress=False)


STUCK_TOOL_EPISODE = '''
import http.server, os, threading, time
from agentjax.agent.decode import EOS
from agentjax.agent import loop as loop_module
from agentjax.agent.loop import AgentLoop, LoopSettings
from agentjax.agent.methods import EpisodeStart
from agentjax.tasks.base import Question
from agentjax.tools.base import FunctionTool
from agentjax.tools.config import HttpConfig, SerpApiConfig
from agentjax.tools.serpapi import SerpApiSearch

class NoModel:  # the reply is scripted: no cache to fill
    batch, max_len = 1, 1 << 20
    def new_state(self): return None, None
    def warm_up(self, cache, logits): return cache, logits
    def extend(self, cache, logits, news, starts): return cache, logits

class TurnCounter:  # a template whose token ids are one per turn
    tokenizer, stop_strings = None, ()
    def prompt(self, conversation): return list(range(len(conversation.turns)))
    def reply_content(self, reply): return reply

class OneReply(AgentLoop):
    def _generate(self, rows, cache, logits, window, key):
        return {0: ("Action: search[anything]", EOS)}, cache, logits, window, key

class Drip(http.server.BaseHTTPRequestHandler):  # a search API that sends its reply one byte every 1.5 s
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        for byte in b'{"search_metadata": {}, "organic_results": []}':
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(1.5)
    def log_message(self, *args): pass

if TOOL == "stuck":
    search = FunctionTool("search", "never answers", lambda _: threading.Event().wait())
else:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["SERPAPI_API_KEY"] = "test-key"
    search = SerpApiSearch(SerpApiConfig(base_url=f"http://127.0.0.1:{server.server_address[1]}/search"),
                           HttpConfig(timeout_s=120, retries=0))
loop = OneReply(NoModel(), TurnCounter(), EpisodeStart(), lambda q: {"search": search},
                LoopSettings(max_steps=1, tool_timeout_s=0.2))
loop.run([Question("q", "?", ("x",))], lambda ep: print(ep.status.value, ep.calls[0].observation, flush=True))
'''


@pytest.mark.parametrize("tool", ["stuck", "dripping server"])
def test_item1_a_stuck_tool_call_cannot_keep_the_process_from_exiting(tool):
    """An episode whose tool never returns (a function that waits forever, or SerpAPI on a 127.0.0.1 server that
    drips its reply a byte every 1.5 s, under a 120 s HTTP deadline) gets its timeout observation, and the process
    then exits at once (a thread-pool thread stuck in the tool used to keep `agentjax eval` from ever exiting)."""
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", f"TOOL = {tool!r}\n" + STUCK_TOOL_EPISODE], capture_output=True,
                              text=True, timeout=60, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit within 60 s of its last episode")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "max_steps The search tool failed: no answer within 0.2 s."
    assert time.monotonic() - started < 30


def test_item2_a_corrupted_middle_line_costs_only_its_own_episode(tmp_path, caplog):
    """Of 250 finished episodes, a NUL-overwritten line 11, a line 40 that is not UTF-8 and a torn last line cost
    only those three: the other 247 are kept in order, each bad line is named in a warning, and the file is
    rewritten readable (so the three episodes are simply played again)."""
    path = tmp_path / TRANSCRIPTS
    records = [{"id": f"q{i}", "prediction": "x" * (i % 7), "scores": {"em": 1.0}} for i in range(250)]
    lines = [json.dumps(r).encode() for r in records]
    lines[10] = b"\0" * len(lines[10])
    lines[39] = lines[39].replace(b'"q39"', b'"q\xff39"')
    lines[249] = lines[249][:20]
    path.write_bytes(b"\n".join(lines))
    with caplog.at_level(logging.WARNING):
        kept = read_transcripts(path)
    assert kept == records[:10] + records[11:39] + records[40:249]
    for line in (11, 40, 250):
        assert f"{path}:{line}: " in caplog.text
    assert [json.loads(line) for line in path.read_text().splitlines()] == kept
