"""What every task provides: `Question`s loaded from its files, a scorer for predicted answers, and its tools."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping

from agentjax.configlib import ConfigSection
from agentjax.tasks.scoring import best_over, exact_match, f1_score
from agentjax.tools.base import Tool
from agentjax.tools.config import ToolsConfig
from agentjax.tools.registry import Toolkit
from agentjax.util.errors import DataError

AnswerKind = Literal["text", "yes_no", "choice", "number"]


@dataclass(frozen=True)
class Question:
    """One evaluation item: the text the agent sees, its gold answer(s), how answers are judged, extra facts."""

    id: str
    question: str
    answers: tuple[str, ...]
    kind: AnswerKind = "text"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "answers", tuple(self.answers))
        if not self.answers:
            raise ValueError(f"question {self.id!r} has no gold answer")

    @property
    def answer(self) -> str:
        """The first (canonical) gold answer."""
        return self.answers[0]


@dataclass(frozen=True)
class NoOptions(ConfigSection):
    """The settings of a task that has none of its own (an eval config's `task_options` stays empty)."""


class Task(ABC):
    """A benchmark: `load` its questions, `score` a prediction, give each episode its tools; `metrics[0]` is the
    headline metric. `Options` is the config section of the task's own settings (an eval config's `task_options`)."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    Options: ClassVar[type[ConfigSection]] = NoOptions

    @classmethod
    def from_options(cls, options: ConfigSection) -> "Task":
        """The task configured by its `Options` (most tasks have none)."""
        return cls()

    def toolkit(self, tools: ToolsConfig, split: str) -> Toolkit:
        """The tools of this task's episodes: the configured ones (a task with its own tools overrides this)."""
        return Toolkit(tools)

    def episode_tools(self, toolkit: Toolkit, question: Question,
                      is_correct: Callable[[str], bool] | None) -> Mapping[str, Tool]:
        """The tools one question's episode is offered: all of the toolkit's (a task may withhold some)."""
        return toolkit.new_episode(is_correct=is_correct)

    @abstractmethod
    def load(self, path: str | Path, split: str = "dev", limit: int | None = None) -> list[Question]:
        """The first `limit` questions (all when None) of `split`, from a file or the task's data folder."""

    @abstractmethod
    def score_answer(self, prediction: str, question: Question) -> dict[str, float]:
        """Every metric for a finished episode's answer."""

    def score(self, prediction: str | None, question: Question) -> dict[str, float]:
        """Every metric for one episode; None (the episode never called finish) scores 0 on all of them."""
        if prediction is None:
            return {m: 0.0 for m in self.metrics}
        return self.score_answer(prediction, question)

    def aggregate(self, scores: Iterable[Mapping[str, float]]) -> dict[str, float]:
        """Mean of each metric over episodes (0.0 for none)."""
        scores = list(scores)
        return {m: sum(s[m] for s in scores) / len(scores) if scores else 0.0 for m in self.metrics}


def resolve_file(path: str | Path, name_in_folder: str) -> Path:
    """`path` itself when it is a file, else `path/name_in_folder`; a clear error when neither exists."""
    path = Path(path)
    if path.is_dir():
        path = path / name_in_folder
    if not path.is_file():
        raise DataError(str(path), "missing_file", "file not found")
    return path


def take(questions: list[Question], limit: int | None) -> list[Question]:
    """The first `limit` questions (all when None); a negative limit is an error, not an empty run."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    return questions if limit is None else questions[:limit]


class TextAnswerTask(Task):
    """A task with free-text answers, judged by SQuAD-normalised exact match and token F1."""

    metrics = ("em", "f1")

    def score_answer(self, prediction: str, question: Question) -> dict[str, float]:
        return {
            "em": best_over(exact_match, prediction, question.answers),
            "f1": best_over(f1_score, prediction, question.answers),
        }
