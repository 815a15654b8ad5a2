"""Bamboogle: 125 two-hop questions Google's answer box gets wrong; judged by exact match (and F1)."""

from __future__ import annotations

from pathlib import Path

from agentjax.tasks.base import Question, TextAnswerTask, resolve_file, take
from agentjax.util.errors import DataError
from agentjax.util.records import read_csv


class Bamboogle(TextAnswerTask):
    """A CSV with a `Question,Answer` header; ids are the 0-based row numbers."""

    name = "bamboogle"

    def load(self, path: str | Path, split: str = "test", limit: int | None = None) -> list[Question]:
        """Questions of `{split}.csv` in file order."""
        path = resolve_file(path, f"{split}.csv")
        rows = read_csv(path)
        where, header = next(rows, (str(path), []))
        if [h.strip().lower() for h in header] != ["question", "answer"]:
            raise DataError(where, "bad_header", f"expected the header 'Question,Answer', got {header!r}")
        questions = []
        for where, row in rows:
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DataError(where, "bad_row", f"expected a non-empty question and answer, got {row!r}")
            questions.append(Question(id=str(len(questions)), question=row[0].strip(), answers=(row[1].strip(),),
                                      meta={"split": split}))
        return take(questions, limit)
