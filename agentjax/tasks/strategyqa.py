"""StrategyQA: yes/no questions needing implicit multi-step reasoning; judged on the answer's first word."""

from __future__ import annotations

from pathlib import Path

from agentjax.tasks.base import Question, Task, resolve_file, take
from agentjax.util.records import field, records
from agentjax.tasks.scoring import best_over, yes_no_match


class StrategyQA(Task):
    """Accuracy: the prediction must start with the right "yes" or "no"."""

    name = "strategyqa"
    metrics = ("accuracy",)

    def load(self, path: str | Path, split: str = "dev", limit: int | None = None) -> list[Question]:
        """Questions of `strategyqa_{split}.json` (a JSON array of {qid, question, answer: bool}) in file order."""
        path = resolve_file(path, f"strategyqa_{split}.json")
        questions = []
        for where, item in records(path):
            questions.append(
                Question(
                    id=field(item, "qid", where),
                    question=field(item, "question", where).strip(),
                    answers=("yes" if field(item, "answer", where, bool) else "no",),
                    kind="yes_no",
                    meta={"facts": tuple(item.get("facts", ())), "split": split},
                )
            )
        return take(questions, limit)

    def score_answer(self, prediction: str, question: Question) -> dict[str, float]:
        return {"accuracy": best_over(yes_no_match, prediction, question.answers)}
