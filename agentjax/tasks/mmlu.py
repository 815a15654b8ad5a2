"""MMLU multiple choice: question, four options and the answer letter per CSV row, one CSV per subject."""

from __future__ import annotations

from pathlib import Path

from agentjax.tasks.base import Question, Task, take
from agentjax.util.errors import DataError
from agentjax.util.records import read_csv
from agentjax.tasks.scoring import best_over, letter_match

LETTERS = ("A", "B", "C", "D")


class MMLU(Task):
    """Accuracy: the prediction must start with the right option letter; options are listed in the question."""

    name = "mmlu"
    metrics = ("accuracy",)

    def load(self, path: str | Path, split: str = "test", limit: int | None = None) -> list[Question]:
        """Questions of one subject CSV, or of every `{split}/*.csv` under an MMLU folder (subjects sorted)."""
        path = Path(path)
        files = [path] if path.is_file() else sorted((path / split).glob("*.csv"))
        if not files:
            raise DataError(str(path / split), "missing_file", "no MMLU CSV files found")
        questions = []
        for file in files:
            subject = file.stem.removesuffix(f"_{split}")
            for i, (where, row) in enumerate(read_csv(file)):
                questions.append(_question(row, f"{subject}-{i}", subject, where))
        return take(questions, limit)

    def score_answer(self, prediction: str, question: Question) -> dict[str, float]:
        return {"accuracy": best_over(letter_match, prediction, question.answers)}


def _question(row: list[str], qid: str, subject: str, where: str) -> Question:
    """One CSV row (question, A, B, C, D, letter) as a Question whose text lists the options."""
    if len(row) != 6:
        raise DataError(where, "bad_row", f"expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
    stem, *options, answer = (cell.strip() for cell in row)
    if answer not in LETTERS:
        raise DataError(where, "bad_answer", f"answer (column 6): expected one of {LETTERS}, got {answer!r}")
    text = "\n".join([stem] + [f"{letter}. {option}" for letter, option in zip(LETTERS, options)])
    return Question(id=qid, question=text, answers=(answer,), kind="choice",
                    meta={"subject": subject, "choices": tuple(options)})
