"""GSM8K grade-school math: the gold is the number after `####` in the worked solution; judged numerically."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from agentjax.tasks.base import Question, Task, resolve_file, take
from agentjax.util.errors import DataError
from agentjax.util.records import field, records
from agentjax.tasks.scoring import best_over, numeric_match, parse_number

FINAL_ANSWER_MARK = "####"


class GSM8K(Task):
    """Accuracy: the prediction's last number equals the gold number exactly (commas and units ignored)."""

    name = "gsm8k"
    metrics = ("accuracy",)

    def load(self, path: str | Path, split: str = "test", limit: int | None = None) -> list[Question]:
        """Questions of `{split}.jsonl` (one {question, answer} object a line, or a JSON array) in file order."""
        path = resolve_file(path, f"{split}.jsonl")
        return take(_questions(records(path), split), limit)

    def from_records(self, records: Iterable[Mapping], split: str = "test", source: str = "records") -> list[Question]:
        """Questions from {question, answer} mappings, e.g. TFDS examples (whose strings may be bytes)."""
        return _questions(((f"{source}[{i}]", r) for i, r in enumerate(records)), split)

    def score_answer(self, prediction: str, question: Question) -> dict[str, float]:
        return {"accuracy": best_over(numeric_match, prediction, question.answers)}


def _questions(records: Iterable[tuple[str, Any]], split: str) -> list[Question]:
    """Questions from (where, record) pairs; ids are the 0-based record numbers."""
    questions = []
    for i, (where, record) in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataError(where, "bad_type", f"expected an object with question and answer, got {type(record).__name__}")
        record = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in record.items()}
        solution = field(record, "answer", where)
        final = solution.rsplit(FINAL_ANSWER_MARK, 1)[1].strip() if FINAL_ANSWER_MARK in solution else ""
        if parse_number(final) is None:
            raise DataError(where, "bad_answer", f"answer: expected '{FINAL_ANSWER_MARK} <number>' at the end, got {solution[-60:]!r}")
        questions.append(Question(id=str(i), question=field(record, "question", where).strip(), answers=(final,),
                                  kind="number", meta={"solution": solution, "split": split}))
    return questions
