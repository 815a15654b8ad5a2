"""Offline search tools: replay of FireAct's recorded searches, and BM25 over a local JSONL corpus."""

from __future__ import annotations

import json

import pytest

from agentjax.configlib import ConfigError, from_dict
from agentjax.util.errors import DataError
from agentjax.tools import ToolsConfig, Toolkit, run_action
from agentjax.tools.config import CorpusConfig
from agentjax.tools.corpus_search import CorpusSearch
from agentjax.tools.recorded import RecordedSearch


@pytest.fixture(scope="module")
def fireact(shared_data):
    return shared_data / "fireact"


@pytest.fixture(scope="module")
def recorded(fireact):
    return RecordedSearch([fireact / "trajs", fireact / "finetune" / "gpt_format"])


def first_search(traj: str) -> tuple[str, str]:
    """The first search query and its observation, read straight from a FireAct trajectory text."""
    lines = traj.split("\n")
    i = next(i for i, line in enumerate(lines) if line.startswith("Action: search["))
    return lines[i][len("Action: search["):-1], lines[i + 1][len("Observation: "):]


def test_replays_fireact_observations_exactly(recorded, fireact):
    """Every first search of FireAct's 500 evaluated episodes replays the observation FireAct's agent got."""
    (results_file,) = (fireact / "trajs").glob("*llama-2-7b*.json")
    results = json.loads(results_file.read_text())
    mismatched = 0
    for record in results.values():
        query, observation = first_search(record["traj"])
        replay = recorded.replay(query)
        assert replay.exact and replay.recorded_query.casefold() == query.casefold()
        mismatched += replay.observation != observation
    assert mismatched <= recorded.conflicts  # only queries recorded twice with different snippets may differ


def test_gpt_format_observations_are_recorded(recorded, fireact):
    """Queries from the fine-tuning JSONL replay their observation (the `Observation: ` prefix removed)."""
    messages = json.loads((fireact / "finetune" / "gpt_format" / "hotpotqa.jsonl").open().readline())["messages"]
    query = messages[1]["content"].split("Action: search[", 1)[1].rsplit("]", 1)[0]
    assert recorded(query) == messages[2]["content"].removeprefix("Observation: ")


def test_exact_ignores_case_and_spacing_then_falls_back_to_nearest(recorded):
    """Case and spacing do not break an exact match; a reworded query gets the nearest recorded query's result."""
    query = "who created the show with Wendy Schaal doing the voice of Francine"
    exact = recorded.replay(query)
    assert recorded.replay("  WHO created the show with   Wendy Schaal doing the voice of FRANCINE ") == exact
    near = recorded.replay("Wendy Schaal Francine voice show creator")
    assert not near.exact and near.recorded_query == query and near.observation == exact.observation


def test_no_shared_word_is_no_result(recorded):
    """A query sharing no word with any recording says there is no result rather than replaying something random."""
    assert recorded("qwxzv zzyzx") == "No results found for 'qwxzv zzyzx'."


def test_first_recording_wins_and_bad_files_name_the_line(tmp_path):
    """Later files do not overwrite a query's first recording; a malformed line is an error naming file:line."""
    def write(name, *steps):
        lines = [json.dumps({"messages": [{"role": "user", "content": "Q?"},
                                          {"role": "assistant", "content": f"Thought: t\nAction: search[{q}]"},
                                          {"role": "user", "content": f"Observation: {o}"}]}) for q, o in steps]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    write("a.jsonl", ("moon distance", "384,400 km"))
    write("b.jsonl", ("Moon  Distance", "a different snippet"), ("sun distance", "150 million km"))
    search = RecordedSearch([tmp_path])
    assert search("moon distance") == "384,400 km" and search("sun distance") == "150 million km"
    assert search.conflicts == 1
    with (tmp_path / "b.jsonl").open("a") as f:
        f.write('{"messages": [oops\n')
    with pytest.raises(DataError, match=r"b\.jsonl:3: not valid JSON"):
        RecordedSearch([tmp_path])
    with pytest.raises(DataError, match="not found"):
        RecordedSearch([tmp_path / "missing"])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    passages = [
        {"title": "Paris", "text": "Paris is the capital and largest city of France."},
        {"title": "Berlin", "text": "Berlin is the capital of Germany."},
        {"text": "The Eiffel Tower is a wrought-iron tower in Paris."},
    ]
    path.write_text("\n".join(json.dumps(p) for p in passages) + "\n")
    return path


def test_corpus_search_ranks_with_bm25(corpus):
    """The best passage (title: text) is returned; top_k > 1 numbers the passages best first."""
    assert CorpusSearch(CorpusConfig(path=str(corpus)))("capital of France") == (
        "Paris: Paris is the capital and largest city of France.")
    assert CorpusSearch(CorpusConfig(path=str(corpus), top_k=2))("Eiffel tower Paris") == (
        "#1: The Eiffel Tower is a wrought-iron tower in Paris. #2: Paris: Paris is the capital and largest city of France.")
    assert CorpusSearch(CorpusConfig(path=str(corpus)))("Tokyo") == "No results found for 'Tokyo'."


def test_corpus_errors_name_file_line_and_field(corpus):
    """A passage without its text field is an error naming file:line and the field."""
    with corpus.open("a") as f:
        f.write(json.dumps({"title": "Rome", "body": "no text field"}) + "\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:4: text: missing"):
        CorpusSearch(CorpusConfig(path=str(corpus)))


def test_toolkit_from_yaml_shaped_config(corpus):
    """A tools config from a mapping (as in a YAML recipe) builds search, calculate and finish, in that order."""
    config = from_dict(ToolsConfig, {"search": "corpus", "calculate": True, "corpus": {"path": str(corpus)}})
    toolkit = Toolkit(config)
    tools = toolkit.new_episode()
    assert list(tools) == ["search", "calculate", "finish"]
    assert toolkit.describe().splitlines()[0].startswith("search[query]:")
    assert run_action(tools, "calculate[2/4]").observation == "1/2"
    assert run_action(tools, "finish[Paris]").status == "finished"
    assert run_action(tools, "browse[x]").status == "invalid_action"


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"search": "bing"}, "search: 'bing' is not one of"),
        ({"search": "recorded"}, "recorded.paths"),
        ({"search": "corpus"}, "corpus.path"),
        ({"search": "none", "http": {"timeout_s": 0}}, "timeout_s must be > 0"),
        ({"search": "none", "serpapi": {"kee_env": "X"}}, "did you mean 'key_env'"),
    ],
)
def test_bad_tools_config_is_a_clear_error(mapping, message):
    """Bad tool settings fail when the config is read, naming the setting."""
    with pytest.raises(ConfigError, match=message):
        from_dict(ToolsConfig, mapping)
