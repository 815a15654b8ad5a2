"""Task loaders read the papers' files into Questions, in the papers' order, and name file:line on bad input."""

from __future__ import annotations

import json
import re

import pytest

from agentjax.configlib import ConfigError, read_yaml
from agentjax.util.errors import DataError
from agentjax.agent.registry import TASKS, get_task
from agentjax.tasks.base import take
from agentjax.util.records import read_json


@pytest.fixture(scope="module")
def fireact(shared_data):
    return shared_data / "fireact"


def test_hotpotqa_first_500_are_fireacts_evaluation_set(fireact):
    """limit=500 gives exactly the questions FireAct evaluated (ids match its results file) with their answers."""
    (results_file,) = (fireact / "trajs").glob("*llama-2-7b*.json")
    results = json.loads(results_file.read_text())
    task = get_task("hotpotqa")
    questions = task.load(fireact / "hotpotqa", "dev", limit=500)
    assert {q.id for q in questions} == set(results)
    for q in questions:
        assert task.score(results[q.id]["gt"], q)["em"] == 1.0  # FireAct's stored gold is our gold, normalised
        assert " ".join(q.question.split()) in " ".join(results[q.id]["traj"].split())  # and the same question
    assert len(get_task("hotpotqa").load(fireact / "hotpotqa" / "dev.json")) == 7405


def test_strategyqa_bamboogle_mmlu(fireact):
    """StrategyQA answers are yes/no, Bamboogle has its 125 questions, MMLU lists options A-D in the question."""
    strategy = get_task("strategyqa").load(fireact / "strategyqa", "dev")
    assert len(strategy) == 229 and {q.answer for q in strategy} == {"yes", "no"}
    assert strategy[0].answer == "no" and strategy[0].kind == "yes_no"
    bamboogle = get_task("bamboogle").load(fireact / "bamboogle", "test")
    assert len(bamboogle) == 125 and bamboogle[0].answer == "james madison"
    mmlu = get_task("mmlu").load(fireact / "mmlu", "test", limit=3)
    assert mmlu[0].id == "abstract_algebra-0" and mmlu[0].answer == "B"
    assert mmlu[0].question.splitlines()[1:] == ["A. 0", "B. 4", "C. 2", "D. 6"]
    anatomy = get_task("mmlu").load(fireact / "mmlu" / "test" / "anatomy_test.csv")
    assert len(anatomy) == 135 and anatomy[0].meta["subject"] == "anatomy"


def test_gsm8k_from_jsonl_and_records(tmp_path):
    """The gold is the number after ####; JSONL files and TFDS-style records (bytes) load the same way."""
    rows = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
            {"question": "A big number?", "answer": "It is large.\n#### 1,234"}]
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = get_task("gsm8k")
    loaded = task.load(tmp_path, "test")
    assert [q.answer for q in loaded] == ["7", "1,234"]
    assert task.score("The answer is 1234.", loaded[1])["accuracy"] == 1.0
    from_tfds = task.from_records([{k: v.encode() for k, v in r.items()} for r in rows])
    assert [(q.question, q.answer) for q in from_tfds] == [(q.question, q.answer) for q in loaded]


@pytest.mark.parametrize(
    "task, name, content, message",
    [
        ("gsm8k", "test.jsonl", '{"question": "q", "answer": "7"}\n', r"test\.jsonl:1: answer: expected '#### <number>'"),
        ("gsm8k", "test.jsonl", '{"question": "q", "answer": "#### 7"}\n{"question": "q"}\n',
         r"test\.jsonl:2: answer: missing"),
        ("gsm8k", "test.jsonl", '{"question": "q", "answer": "#### 7"}\n{bad json\n', r"test\.jsonl:2: not valid JSON"),
        ("hotpotqa", "dev.json", '[{"question": "q", "answer": "a"},\n {"question": "q", "answer": 3}]',
         r"dev\.json:2: answer: expected str"),
        ("strategyqa", "strategyqa_dev.json", '[{"qid": "x", "question": "q", "answer": "yes"}]',
         r"strategyqa_dev\.json:1: answer: expected bool"),
        ("bamboogle", "test.csv", "Question,Answer\nWho?,Someone\nWhat?\n", r"test\.csv:3: expected a non-empty"),
        ("bamboogle", "test.csv", "Q,A\n", r"test\.csv:1: expected the header"),
        ("mmlu", "x_test.csv", "q,a,b,c,d,A\nq,a,b,c,d,E\n", r"x_test\.csv:2: answer \(column 6\)"),
    ],
)
def test_bad_files_name_file_line_and_field(tmp_path, task, name, content, message):
    """Malformed input raises DataError naming the file, the line and the field at fault."""
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        get_task(task).load(tmp_path / name, "test" if task in ("gsm8k", "bamboogle") else "dev")


def test_missing_file_and_unknown_task(tmp_path):
    """A missing file names the path tried; an unknown task name lists the known ones."""
    with pytest.raises(DataError, match=r"dev\.json: file not found"):
        get_task("hotpotqa").load(tmp_path, "dev")
    with pytest.raises(ConfigError, match="did you mean 'hotpotqa'"):
        get_task("hotpotq")
    assert sorted(TASKS) == ["bamboogle", "gsm8k", "hotpotqa", "mmlu", "strategyqa", "world", "world-hallucination"]


def test_limit():
    """A negative limit is an error rather than a silently empty evaluation."""
    with pytest.raises(ValueError, match="limit"):
        take([], -1)


# --- bytes that are not UTF-8, and byte-order marks (issue 13, item 6) ------------------------------------------

TASK_FILES = [("hotpotqa", "hotpotqa/dev.json", "dev"), ("strategyqa", "strategyqa/strategyqa_dev.json", "dev"),
              ("bamboogle", "bamboogle/test.csv", "test"), ("mmlu", "mmlu/test/anatomy_test.csv", "test")]


def bad_byte_in_the_middle(raw: bytes) -> tuple[bytes, int]:
    """`raw` with a 0xff byte at the start of its middle line (CSV) or middle string value (JSON), and its line."""
    starts = [m.end() for m in re.finditer(rb'":\s*"' if raw.lstrip()[:1] in b"[{" else rb"\n", raw)]
    cut = starts[len(starts) // 2]
    return raw[:cut] + b"\xff" + raw[cut:], raw.count(b"\n", 0, cut) + 1


@pytest.mark.parametrize("task, name, split", TASK_FILES)
def test_item6_task_files_with_a_bom_or_a_bad_byte(fireact, tmp_path, task, name, split):
    """A BOM changes no question; a byte that is not UTF-8 is a DataError (`invalid_utf8`) naming the file and a line
    no later than the byte's (a record or row may start earlier), never a bare UnicodeDecodeError."""
    source = fireact / name
    expected = [(q.id, q.question, q.answers) for q in get_task(task).load(source, split)]
    marked = tmp_path / source.name
    marked.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    assert [(q.id, q.question, q.answers) for q in get_task(task).load(marked, split)] == expected
    raw, line = bad_byte_in_the_middle(source.read_bytes())
    marked.write_bytes(raw)
    with pytest.raises(DataError, match="not valid UTF-8") as raised:
        get_task(task).load(marked, split)
    path, reported = raised.value.origin.rsplit(":", 1)
    assert raised.value.reason == "invalid_utf8" and path == str(marked) and 1 <= int(reported) <= line


def test_item6_whole_json_files_and_yaml_configs_name_the_bad_byte(tmp_path):
    """A results file read whole with a byte that is not UTF-8 names file, line and column; a YAML config names
    the file and the position (YAML decodes it)."""
    results = tmp_path / "results.json"
    results.write_bytes(b'{"q1": {"pred": "a",\n "gt": "b\xff"}}')
    with pytest.raises(DataError, match=r"results\.json:2: not valid UTF-8: byte 0xff at column 10"):
        read_json(results)
    results.write_bytes(b'\xef\xbb\xbf{"q1": {"pred": "a"}}')
    assert read_json(results) == {"q1": {"pred": "a"}}
    config = tmp_path / "eval.yaml"
    config.write_bytes(b"task: hotpotqa\nsplit: d\xffv\n")
    with pytest.raises(ConfigError, match=r"(?s)eval\.yaml: not valid YAML: .*#x00ff.*position 23"):
        read_yaml(config)
