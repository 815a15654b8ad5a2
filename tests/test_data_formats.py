"""Readers for every format on the shared files, bad-input reporting, and the native format's lossless round trip."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from data_support import FIREACT, FIXTURES, fixture_conversations, small_tokenizer

from agentjax.configlib import from_dict
from agentjax.data.config import ConditioningConfig, SourceConfig
from agentjax.data.conversation import Conversation, Outcome, Turn
from agentjax.util.errors import BadInputPolicy, DataError
from agentjax.data.formats import read_conversations
from agentjax.data.native import write_conversations
from agentjax.util.records import iter_records
from agentjax.data.sources import load_source
from agentjax.data.templates import get_template


def roles(conv: Conversation) -> str:
    return "".join(t.role[0] for t in conv.turns)  # s/u/a/t


def test_fireact_gpt_hotpotqa_gives_500_conversations_with_untrained_observations(shared_data):
    """FireAct gpt hotpotqa: 500 conversations; question, then replies alternating with tool observations (untrained)."""
    convs = list(read_conversations(shared_data / FIREACT / "hotpotqa.jsonl", "fireact"))
    assert len(convs) == 500
    for line, conv in enumerate(convs, 1):
        assert conv.origin.endswith(f"hotpotqa.jsonl:{line}")
        assert conv.turns[0].role == "user" and not conv.turns[0].train
        assert roles(conv)[1:] == "at" * ((len(conv.turns) - 1) // 2)
        for turn in conv.turns[1:]:
            assert turn.train == (turn.role == "assistant")
            assert not turn.content.startswith("Observation:")  # the prefix belongs to the template
        assert conv.turns[-1].content == "Episode finished, reward = True"
        assert conv.outcome == Outcome(success=True, reward=1.0)


def test_fireact_multimethod_reads_methods_outcomes_and_irregular_rows(shared_data):
    """multitask_multimethod: 2063 rows; ReAct, CoT and Reflexion told apart; 49 failed episodes; odd role orders kept."""
    convs = list(read_conversations(shared_data / FIREACT / "multitask_multimethod.jsonl", "fireact"))
    assert len(convs) == 2063
    methods = Counter(c.method for c in convs)
    assert set(methods) == {"react", "cot", "reflexion"} and min(methods.values()) > 50
    assert Counter(c.outcome.success for c in convs) == {True: 2014, False: 49}
    assert sum("aa" in roles(c) for c in convs) == 5 and sum(roles(c).startswith("a") for c in convs) == 2


def test_fireact_alpaca_splits_into_the_same_turns_as_the_gpt_file(shared_data):
    """The alpaca file's plain trajectory text splits into exactly the gpt file's turns (questions up to outer spaces)."""
    alpaca = list(read_conversations(shared_data / "fireact/finetune/alpaca_format/hotpotqa.json", "fireact-alpaca"))
    gpt = list(read_conversations(shared_data / FIREACT / "hotpotqa.jsonl", "fireact"))
    assert len(alpaca) == len(gpt) == 500
    for a, g in zip(alpaca, gpt):
        assert a.turns[1:] == g.turns[1:]
        assert a.turns[0].content.strip() == g.turns[0].content.strip()
        assert a.outcome == g.outcome


EXPECTED_FIXTURES = {  # file -> per conversation: roles (s/u/a/t) and which turns are trained
    "agentinstruct_sample.jsonl": [("uauaua", "000101"), ("uauaua", "010101")],
    "sharegpt_sample.json": [("uaua", "0101"), ("sua", "001")],
    "nat_sample.json": [("uauata", "000101"), ("uauata", "000101")],
    "agentflan_sample.jsonl": [("suata", "00101"), ("sua", "001")],
    "openai_tools_sample.jsonl": [("suata", "00101")],
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_readers_give_the_right_roles_and_trained_turns(shared_data, name):
    """Each invented sample: conversation count, role order and the turns its loss flags select."""
    convs = list(read_conversations(shared_data / "fixtures" / name, FIXTURES[name]))
    got = [(roles(c), "".join(str(int(t.train)) for t in c.turns)) for c in convs]
    assert got == EXPECTED_FIXTURES[name]


def test_json_array_records_know_the_line_they_start_on(shared_data):
    """A record of a JSON-array file is reported at the line of its opening brace."""
    path = shared_data / "fixtures" / "sharegpt_sample.json"
    lines = path.read_text().splitlines()
    for conv in read_conversations(path, "sharegpt"):
        line = int(conv.origin.rsplit(":", 1)[1])
        assert lines[line - 1].strip() == "{"
        assert conv.id in "\n".join(lines[line - 1 : line + 3])


def test_openai_tool_calls_and_nat_labels_are_kept(shared_data):
    """OpenAI tool calls become `name[arguments]` text in the reply; NAT labels become outcomes."""
    (conv,) = read_conversations(shared_data / "fixtures/openai_tools_sample.jsonl", "openai")
    assert conv.turns[2].content == 'calculate[{"expression": "17*23"}]' and conv.turns[3] == Turn("tool", "391")
    pos, neg = read_conversations(shared_data / "fixtures/nat_sample.json", "nat")
    assert (pos.outcome.success, neg.outcome.success) == (True, False)
    assert pos.turns[4] == Turn("tool", "84")


BROKEN = {  # line of fixtures/broken.jsonl -> (reason, words the message must contain)
    2: ("invalid_json", "not valid JSON"),
    3: ("unknown_role", "conversations[0].from: unknown role 'alien'"),
    4: ("nothing_to_train", "no turn is trained"),
    6: ("missing_field", "conversations: missing"),
}


def _load(path, tokenizer, bad_input):
    source = from_dict(SourceConfig, {"path": str(path), "format": "agentinstruct"})
    return load_source(source, get_template("react", tokenizer), ConditioningConfig(), bad_input)


@pytest.mark.parametrize("line", sorted(BROKEN))
def test_each_broken_line_is_an_error_naming_file_line_and_problem(shared_data, tmp_path, line):
    """broken.jsonl: every bad line, met in raise mode, gives a DataError `file:line: problem` with a reason."""
    lines = (shared_data / "fixtures/broken.jsonl").read_text().splitlines()
    # keep the good line and bad line `line`; blank out the others so line numbers stay the same
    kept = [text if i in (1, line) else "" for i, text in enumerate(lines, 1)]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(kept) + "\n")
    with pytest.raises(DataError) as info:
        _load(path, small_tokenizer(shared_data), "raise")
    reason, words = BROKEN[line]
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{path}:{line}: ") and words in str(info.value)


def test_broken_file_in_skip_mode_keeps_the_good_line_and_counts_bad_ones(shared_data):
    """Skip mode: the one good conversation comes through; each bad line is counted under its reason."""
    loaded = _load(shared_data / "fixtures/broken.jsonl", small_tokenizer(shared_data), "skip")
    assert [c.id for c in loaded.conversations] == ["os_0"]
    assert loaded.bad_input == Counter({reason: 1 for reason, _ in BROKEN.values()})


def test_native_format_round_trips_every_field(shared_data, tmp_path):
    """write_conversations then read_conversations gives back equal conversations, metadata and all."""
    convs = list(read_conversations(shared_data / FIREACT / "hotpotqa_multimethod.jsonl", "fireact"))[:50]
    convs += [c.replace(task="math", outcome=Outcome(success=False, reward=0.25, f1=0.4), meta={"gold": "84", "seed": 3})
              for c in read_conversations(shared_data / "fixtures/nat_sample.json", "nat")]
    convs.append(Conversation((Turn("user", "é \u2581 😀\n\t"), Turn("assistant", "", True)), origin="generated:7"))
    path = tmp_path / "out" / "convs.jsonl"
    assert write_conversations(path, convs) == len(convs)
    assert list(read_conversations(path)) == convs


def test_native_read_names_origins_and_rejects_unknown_keys(tmp_path):
    """Conversations written without an origin get `file:line`; an unknown key is an error naming the field."""
    path = tmp_path / "c.jsonl"
    write_conversations(path, [Conversation((Turn("user", "q"), Turn("assistant", "a", True)))] * 2)
    assert [c.origin for c in read_conversations(path)] == [f"{path}:1", f"{path}:2"]
    record = json.loads(path.read_text().splitlines()[0])
    record["turns"][0]["trian"] = True
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"c\.jsonl:1: turns\[0\]\.trian: unknown key"):
        list(read_conversations(path))


def test_write_is_atomic_no_partial_file_on_failure(tmp_path):
    """A conversation that cannot be written leaves the previous file untouched and no temp file behind."""
    path = tmp_path / "c.jsonl"
    good = Conversation((Turn("user", "q"), Turn("assistant", "a", True)), origin="x:1")
    write_conversations(path, [good])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        write_conversations(path, [good, good.replace(meta={"bad": object()})])
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_unknown_format_and_skip_counts(shared_data):
    """An unknown format name lists the known ones; BadInputPolicy counts by reason in skip mode."""
    with pytest.raises(ValueError, match="known formats"):
        list(read_conversations(shared_data / "fixtures/broken.jsonl", "alpaca"))
    policy = BadInputPolicy("skip")
    ok = list(read_conversations(shared_data / "fixtures/broken.jsonl", "agentinstruct", bad_input=policy))
    assert len(ok) == 2 and policy.counts == Counter(invalid_json=1, unknown_role=1, missing_field=1)


# --- bytes that are not UTF-8, and byte-order marks (issue 13, item 6) ------------------------------------------

ALL_FORMATS = {**{name: fmt for name, fmt in FIXTURES.items()}, f"{FIREACT}/hotpotqa.jsonl": "fireact",
               "fireact/finetune/alpaca_format/hotpotqa.json": "fireact-alpaca", "native.jsonl": "agentjax"}


def format_file(shared_data, tmp_path, name: str):
    """The shared file `name` (fixtures are under fixtures/), or for the native format one written from them."""
    if name != "native.jsonl":
        return shared_data / ("fixtures" if name in FIXTURES else "") / name
    write_conversations(tmp_path / name, fixture_conversations(shared_data))
    return tmp_path / name


def with_bad_byte(source, out):
    """A copy of `source` with a 0xff byte put at the start of the middle string value of the file."""
    raw = source.read_bytes()
    values = list(re.finditer(rb'":\s*"', raw))
    cut = values[len(values) // 2].end()
    out.write_bytes(raw[:cut] + b"\xff" + raw[cut:])
    return out


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_item6_a_byte_order_mark_changes_nothing(shared_data, tmp_path, name):
    """Every format reads a file with a UTF-8 BOM exactly as without it (the first record is not `invalid_json`)."""
    source, fmt = format_file(shared_data, tmp_path, name), ALL_FORMATS[name]
    marked = tmp_path / f"bom-{source.name}"
    marked.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    assert [c.turns for c in read_conversations(marked, fmt)] == [c.turns for c in read_conversations(source, fmt)]
    line = lambda path: [o.rsplit(":", 1)[1] for o, _ in iter_records(path)]  # noqa: E731
    assert line(marked) == line(source)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_item6_invalid_utf8_is_a_data_error_naming_the_record_and_skippable(shared_data, tmp_path, name):
    """A record holding a byte that is not UTF-8 raises a DataError (`invalid_utf8`) naming its file:line; in skip
    mode exactly that record is left out and counted, and every other record is read."""
    source, fmt = format_file(shared_data, tmp_path, name), ALL_FORMATS[name]
    bad = with_bad_byte(source, tmp_path / f"bad-{source.name}")
    items = list(iter_records(bad))
    (i,) = [i for i, (_, record) in enumerate(items) if isinstance(record, DataError)]
    assert [o for o, _ in items] == [o.replace(str(source), str(bad)) for o, _ in iter_records(source)]
    with pytest.raises(DataError, match="not valid UTF-8") as raised:
        list(read_conversations(bad, fmt))
    assert raised.value.reason == "invalid_utf8" and raised.value.origin == items[i][0]
    policy = BadInputPolicy("skip")
    kept = [c.turns for c in read_conversations(bad, fmt, bad_input=policy)]
    everything = [c.turns for c in read_conversations(source, fmt)]
    assert policy.counts == Counter(invalid_utf8=1) and kept == everything[:i] + everything[i + 1:]
