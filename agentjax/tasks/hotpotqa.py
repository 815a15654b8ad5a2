"""HotpotQA in the order ReAct and FireAct evaluate it: the first 500 of a seeded shuffle are their dev set."""

from __future__ import annotations

import random
from pathlib import Path

from agentjax.tasks.base import Question, TextAnswerTask, resolve_file, take
from agentjax.util.records import field, records

FIREACT_SHUFFLE_SEED = 233  # ReAct's seed; FireAct's "dev 0-500" questions are the first 500 after it


class HotpotQA(TextAnswerTask):
    """Multi-hop Wikipedia QA; ids are indices into the file, so they match FireAct's result files."""

    name = "hotpotqa"

    def load(self, path: str | Path, split: str = "dev", limit: int | None = None) -> list[Question]:
        """Questions of `split`.json in FireAct's order: `limit=500` gives exactly its evaluation set."""
        path = resolve_file(path, f"{split}.json")
        items = list(records(path))
        order = list(range(len(items)))
        random.Random(FIREACT_SHUFFLE_SEED).shuffle(order)
        questions = []
        for index in order:
            where, item = items[index]
            questions.append(
                Question(
                    id=str(index),
                    question=field(item, "question", where).strip(),
                    answers=(field(item, "answer", where),),
                    meta={"type": item.get("type", ""), "split": split},
                )
            )
        return take(questions, limit)
