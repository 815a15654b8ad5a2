"""The generated world as a registered task: its questions, EM/F1 scoring, and its own tools."""

from __future__ import annotations

from pathlib import Path

from agentjax.tasks.base import Question, TextAnswerTask, take
from agentjax.tools.config import ToolsConfig
from agentjax.world.build import SPLITS, World, WorldConfig, build_world
from agentjax.world.tools import WorldToolkit


class WorldTask(TextAnswerTask):
    """The world's questions, scored by SQuAD-normalised EM and F1; `meta["type"]` is the question kind.

    Its `Options` is the world's config (an eval config's `task_options`: seed, sizes); its tools are the world's
    search/lookup over the split's documents, the calculator and finish, whatever the eval config's `tools` say.
    """

    name = "world"
    Options = WorldConfig

    def __init__(self, world: World | None = None):
        self.world = world or build_world()

    @classmethod
    def from_options(cls, options: WorldConfig) -> "WorldTask":
        return cls(build_world(options))

    def load(self, path: str | Path = "", split: str = "test", limit: int | None = None) -> list[Question]:
        """The first `limit` questions of `split`; `path` is unused (the world is generated, not read)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return take(self.world.questions[split], limit)

    def toolkit(self, tools: ToolsConfig, split: str) -> WorldToolkit:
        return WorldToolkit(self.world, split)
