"""NAT outcome conditioning: label the question turn with how the trajectory ended; inference asks for the best label."""

from __future__ import annotations

from agentjax.data.config import ConditioningConfig
from agentjax.data.conversation import Conversation, Outcome
from agentjax.util.errors import DataError


def question_turn_index(conv: Conversation) -> int:
    """The question: the last user turn before the first trained assistant turn (or the last user turn at all).

    Both a training trajectory and the inference prompt made from its prefix pick the same turn.
    """
    first_trained = next((i for i, t in enumerate(conv.turns) if t.role == "assistant" and t.train), len(conv.turns))
    users = [i for i, t in enumerate(conv.turns[:first_trained]) if t.role == "user"]
    if not users:
        raise DataError(conv.origin, "no_question", "no user turn to condition on its outcome")
    return users[-1]


def outcome_label(outcome: Outcome, config: ConditioningConfig) -> str | None:
    """The label for an outcome (None when the outcome needed is unknown).

    binary: success or not. graded: by answer F1 into four levels (success/failure stand in when F1 is unknown).
    """
    if config.mode == "binary":
        return None if outcome.success is None else config.positive if outcome.success else config.negative
    if outcome.f1 is None:
        return None if outcome.success is None else config.levels[0] if outcome.success else config.levels[-1]
    high, low = config.f1_thresholds
    level = 0 if outcome.f1 >= high else 1 if outcome.f1 >= low else 2 if outcome.f1 > 0 else 3
    return config.levels[level]


def best_label(config: ConditioningConfig) -> str:
    """The label inference always uses: the positive / best-graded condition."""
    return config.positive if config.mode == "binary" else config.levels[0]


def with_label(conv: Conversation, label: str, placement: str) -> Conversation:
    """`conv` with `label` put before (`prefix`) or after (`suffix`) its question turn's text."""
    i = question_turn_index(conv)
    turn = conv.turns[i]
    content = f"{label} {turn.content}" if placement == "prefix" else f"{turn.content} {label}"
    turns = conv.turns[:i] + (type(turn)(turn.role, content, turn.train),) + conv.turns[i + 1 :]
    return conv.replace(turns=turns)


def condition_on_outcome(conv: Conversation, config: ConditioningConfig) -> Conversation:
    """Training: label the question with this trajectory's own outcome (an error when the outcome is unknown)."""
    if config.mode == "none":
        return conv
    label = outcome_label(conv.outcome, config)
    if label is None:
        needed = "success" if config.mode == "binary" else "F1 or success"
        raise DataError(conv.origin, "no_outcome", f"conditioning mode {config.mode!r} needs the trajectory's {needed}, which is unknown")
    return with_label(conv, label, config.placement)


def condition_for_inference(conv: Conversation, config: ConditioningConfig) -> Conversation:
    """Inference: ask for a successful trajectory by labelling the question with the best condition."""
    if config.mode == "none":
        return conv
    return with_label(conv, best_label(config), config.placement)
