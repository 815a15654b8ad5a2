"""The generated tool-use world: entities and documents (`entities`), questions and the programs that answer them
(`questions`), the world itself (`build`), its tools (`tools`), the task registered as `world` (`task`), and the
scripted teachers that write training trajectories (`teacher`, `trajectory_format`, `general_chat`)."""

from agentjax.world.build import World, WorldConfig, build_world
from agentjax.world.task import WorldTask

__all__ = ["World", "WorldConfig", "WorldTask", "build_world"]
