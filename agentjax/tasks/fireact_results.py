"""Re-score a FireAct results file (question id -> {reward, em, f1, gt, pred, traj}) with agentjax's scorer."""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

from agentjax.tasks.base import Question, Task
from agentjax.util.errors import DataError
from agentjax.util.records import field, read_json

_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Rescored:
    """Mean metrics over the file, and every question whose stored metric differs from the recomputed one."""

    n: int
    metrics: dict[str, float]
    stored: dict[str, float]
    disagreements: list[dict] = dataclass_field(default_factory=list)


def rescore(path: str | Path, task: Task) -> Rescored:
    """Score each stored `pred` against its `gt` (a null pred is an unfinished episode) and compare with stored scores."""
    results = read_json(path)
    if not isinstance(results, dict) or not results:
        raise DataError(str(path), "bad_type", "expected a non-empty JSON object mapping question id -> result")
    scores, stored, disagreements = [], [], []
    for qid, record in results.items():
        where = f"{path}[{qid!r}]"
        prediction = field(record, "pred", where, (str, type(None)))
        question = Question(id=qid, question="", answers=(field(record, "gt", where),))
        score = task.score(prediction, question)
        kept = {m: float(field(record, m, where, (bool, int, float))) for m in task.metrics if m in record}
        differing = {m: (kept[m], score[m]) for m in kept if abs(kept[m] - score[m]) > _TOLERANCE}
        if differing:
            disagreements.append({"id": qid, "pred": prediction, "gt": question.answer,
                                  **{m: {"stored": s, "recomputed": r} for m, (s, r) in differing.items()}})
        scores.append(score)
        stored.append(kept)
    stored_means = {m: sum(s[m] for s in stored) / len(stored) for m in task.metrics if all(m in s for s in stored)}
    return Rescored(n=len(scores), metrics=task.aggregate(scores), stored=stored_means, disagreements=disagreements)
