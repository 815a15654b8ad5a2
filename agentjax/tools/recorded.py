"""`search[query]` replayed from recorded trajectories, for offline, reproducible runs.

The recordings map each query an agent searched to the observation it got, read from FireAct's results files
(question id -> {traj: text}), gpt-format JSONL and alpaca JSON. A query is answered by its exact recording (case
and spacing ignored), else by the recording of the nearest recorded query (BM25 over the recorded queries).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from agentjax.data.conversation import Turn
from agentjax.util.errors import DataError
from agentjax.data.formats import read_conversations, split_react_text
from agentjax.util.records import field, read_json
from agentjax.tools.base import ToolError, parse_action
from agentjax.tools.bm25_index import Bm25Index

_ACTION_LINE = re.compile(r"^Action(?: \d+)?:(.*)$", re.MULTILINE)


def search_steps(turns: Sequence[Turn]) -> Iterator[tuple[str, str]]:
    """(query, observation) for each assistant turn whose last action is search[...] and that a tool turn answers."""
    for reply, answer in zip(turns, turns[1:]):
        if reply.role != "assistant" or answer.role != "tool":
            continue
        actions = _ACTION_LINE.findall(reply.content)
        action = parse_action(actions[-1]) if actions else None
        if action is not None and action.name == "search" and action.argument:
            yield action.argument, answer.content.strip()


def _turns(path: Path) -> Iterator[Sequence[Turn]]:
    """Each trajectory's turns, from a gpt-format JSONL, a FireAct results JSON or an alpaca JSON file."""
    if path.suffix == ".jsonl":
        yield from (conversation.turns for conversation in read_conversations(path, "fireact"))
        return
    data = read_json(path)
    if isinstance(data, dict):  # FireAct results: question id -> {traj: "...", ...}
        yield from (split_react_text(field(record, "traj", f"{path}[{qid!r}]")) for qid, record in data.items())
    elif isinstance(data, list):
        yield from (conversation.turns for conversation in read_conversations(path, "fireact-alpaca"))
    else:
        raise DataError(str(path), "bad_type", "expected a FireAct results object or an alpaca array")


def _files(paths: Iterable[str | Path]) -> list[Path]:
    """The given files, and the *.json / *.jsonl files of the given folders, in a stable order."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(str(path), "missing_file", "recorded-search file or folder not found")
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
        files = _files(paths)
        self.recordings: dict[str, tuple[str, str]] = {}  # key -> (query as recorded, observation)
        self.conflicts = 0  # repeated queries whose recorded observations differ
        for file in files:
            for turns in _turns(file):
                for query, observation in search_steps(turns):
                    known = self.recordings.setdefault(_key(query), (query, observation))
                    self.conflicts += known[1] != observation
        if not self.recordings:
            raise DataError(", ".join(map(str, files)), "no_search_steps", "no search[...] steps with observations found")
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
