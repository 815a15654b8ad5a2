"""`finish[answer]`: ends the episode; the argument is the agent's final answer. Reflexion's checked variant."""

from __future__ import annotations

from typing import Callable

RIGHT_ANSWER = "Your answer is correct."
WRONG_ANSWER = "Your answer is wrong. Reflect on the mistake and try again."


class Finish:
    """The terminal tool: the loop stops the episode when it is called and scores the argument."""

    name = "finish"
    description = "finish[answer]: give the final answer and end the task"
    ends_episode = True

    def __call__(self, argument: str) -> str:
        return "Episode finished."


class CheckedFinish(Finish):
    """`finish[answer]` that tells the agent whether the answer is right (Reflexion's evaluator feedback).

    A wrong answer does not end the episode (`ends_episode` is False after it), so the agent can reflect and retry.
    """

    def __init__(self, is_correct: Callable[[str], bool]):
        self.is_correct = is_correct
        self.ends_episode = True

    def __call__(self, argument: str) -> str:
        self.ends_episode = self.is_correct(argument)
        return RIGHT_ANSWER if self.ends_episode else WRONG_ANSWER


def finish_tool(is_correct: Callable[[str], bool] | None = None) -> Finish:
    """Plain finish, or one that checks the answer when `is_correct` is given (Reflexion)."""
    return Finish() if is_correct is None else CheckedFinish(is_correct)
