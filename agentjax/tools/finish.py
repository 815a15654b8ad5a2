"""`finish[answer]`: ends the episode; the argument is the agent's final answer."""

from __future__ import annotations


class Finish:
    """The terminal tool: the loop stops the episode when it is called and scores the argument."""

    name = "finish"
    description = "finish[answer]: give the final answer and end the task"
    ends_episode = True

    def __call__(self, argument: str) -> str:
        return "Episode finished."
