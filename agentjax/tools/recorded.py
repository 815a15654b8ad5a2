"""`search[query]` replayed from recorded trajectories, for offline, reproducible runs.

The recordings map each query an agent searched to the observation it got; FireAct's results files (question id
-> {traj: text}), its gpt-format JSONL ({messages}) and alpaca JSON ([{output}]) are read. A query is answered by
its exact recording (case and spacing ignored), else by the recording of the nearest recorded query (BM25).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from agentjax.tasks.files import InputFileError, field, read_json, read_jsonl
from agentjax.tools.base import ToolError, parse_action
from agentjax.tools.bm25_index import Bm25Index

_STEP = re.compile(
    r"^Action(?: \d+)?:[ \t]*(?P<action>[^\n]*)\nObservation(?: \d+)?:[ \t]*(?P<observation>.*?)"
    r"(?=\n(?:Thought|Action|Observation)(?: \d+)?:|\Z)",
    re.MULTILINE | re.DOTALL,
)


def search_steps(trajectory: str) -> Iterator[tuple[str, str]]:
    """(query, observation) for every `Action: search[...]` followed by an `Observation:` in a trajectory text."""
    for step in _STEP.finditer(trajectory):
        action = parse_action(step["action"])
        if action is not None and action.name == "search" and action.argument:
            yield action.argument, step["observation"].strip()


def _trajectories(path: Path) -> Iterator[tuple[str, str]]:
    """(where, trajectory text) from a FireAct results JSON, a gpt-format JSONL or an alpaca JSON file."""
    if path.suffix == ".jsonl":
        for where, record in read_jsonl(path):
            messages = field(record, "messages", where, list)
            yield where, "\n".join(field(m, "content", f"{where}: messages[{i}]") for i, m in enumerate(messages))
        return
    data = read_json(path)
    if isinstance(data, dict):  # FireAct results: question id -> {traj, ...}
        for qid, record in data.items():
            yield f"{path}[{qid!r}]", field(record, "traj", f"{path}[{qid!r}]")
    elif isinstance(data, list):  # alpaca: [{instruction, input, output}]
        for i, record in enumerate(data):
            yield f"{path}[{i}]", field(record, "output", f"{path}[{i}]")
    else:
        raise InputFileError(f"{path}: expected a FireAct results object or an alpaca array")


def _files(paths: Iterable[str | Path]) -> list[Path]:
    """The given files, and the *.json / *.jsonl files of the given folders, in a stable order."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise InputFileError(f"{path}: recorded-search file or folder not found")
    return files


def _key(query: str) -> str:
    """The form in which queries must agree to match exactly: case-folded, whitespace folded."""
    return " ".join(query.casefold().split())


@dataclass(frozen=True)
class Replay:
    """The answer to one query: the observation, the recorded query it came from, and whether that was exact."""

    observation: str
    recorded_query: str
    exact: bool


class RecordedSearch:
    """The `search` tool answered from recordings; the first recording of a query wins when files disagree."""

    name = "search"
    description = "search[query]: search the web and return a short snippet (replayed from recorded runs)"

    def __init__(self, paths: Iterable[str | Path]):
        self.recordings: dict[str, tuple[str, str]] = {}  # key -> (query as recorded, observation)
        self.conflicts = 0  # repeated queries whose recorded observations differ
        for file in _files(paths):
            for _, trajectory in _trajectories(file):
                for query, observation in search_steps(trajectory):
                    known = self.recordings.setdefault(_key(query), (query, observation))
                    self.conflicts += known[1] != observation
        if not self.recordings:
            raise InputFileError(f"no search steps found in {[str(p) for p in paths]}")
        self._keys = list(self.recordings)
        self.index = Bm25Index([self.recordings[k][0] for k in self._keys])

    def replay(self, query: str) -> Replay | None:
        """The exact recording of `query`, else the nearest one; None when no recorded query shares a word."""
        key = _key(query)
        if key in self.recordings:
            return Replay(self.recordings[key][1], self.recordings[key][0], exact=True)
        hits = self.index.search(query, k=1)
        if not hits:
            return None
        recorded_query, observation = self.recordings[self._keys[hits[0][0]]]
        return Replay(observation, recorded_query, exact=False)

    def __call__(self, argument: str) -> str:
        if not argument.strip():
            raise ToolError("search needs a query, e.g. search[capital of France]")
        found = self.replay(argument)
        return found.observation if found is not None else f"No results found for {argument.strip()!r}."
