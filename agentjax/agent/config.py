"""The typed config of an evaluation (`agentjax eval --config X.yaml key=value ...`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from agentjax.agent.decode import DEFAULT_BUCKETS
from agentjax.agent.methods import TOOLS_PLACEHOLDER
from agentjax.agent.registry import task_options
from agentjax.configlib import ConfigError, ConfigSection
from agentjax.data.config import ConditioningConfig
from agentjax.data.formats import FORMATS, read_conversations
from agentjax.data.prompts import react_prompt
from agentjax.sharding import MeshConfig
from agentjax.tools.base import OBSERVATION_MAX_CHARS
from agentjax.tools.config import ToolsConfig
from agentjax.train.config import ModelSection
from agentjax.train.run_dir import read_run_config
from agentjax.util.text import read_text


@dataclass(frozen=True)
class GenerationConfig(ConfigSection):
    """Decoding: batch of episodes, cache length, reply budget, sampling, and extend length buckets."""

    batch_size: int = 8
    max_len: int = 2048  # tokens of context per episode (KV cache length)
    max_new_tokens: int = 256  # per reply
    temperature: float = 0.0  # 0: greedy (NAT samples at 0.2)
    top_k: int = 0
    top_p: float = 1.0
    buckets: tuple[int, ...] = DEFAULT_BUCKETS  # extend lengths compiled; longer inputs go in chunks
    # keep batch_size rows even when there are fewer questions (idle rows cost a little per step), so that a later
    # evaluation at this batch size reuses the compiled programs; otherwise the batch shrinks to the questions
    fixed_batch: bool = False


@dataclass(frozen=True)
class FewShotConfig(ConfigSection):
    """A prompted (not fine-tuned) model's system prompt: the ReAct format, the episode's tools and the first
    `count` trajectories of a training file as worked examples (FireAct's prompted baseline)."""

    path: str
    format: str = "agentjax"
    count: int = 2
    intro: str = "Answer the question with the tools, one step at a time."

    def validate(self):
        if self.format not in FORMATS:
            raise ConfigError(f"few_shot.format: unknown format {self.format!r}; known: {sorted(FORMATS)}")
        if self.count < 1:
            raise ConfigError("few_shot.count must be >= 1")

    def prompt(self) -> str:
        if not Path(self.path).is_file():
            raise ConfigError(f"few_shot.path: {self.path} does not exist")
        examples = list(itertools.islice(read_conversations(self.path, self.format), self.count))
        return react_prompt(self.intro, TOOLS_PLACEHOLDER, examples)


@dataclass(frozen=True)
class EvalConfig(ConfigSection):
    """Which model, on which task and tools, with which method and template, written where."""

    run: str | None = None  # a training run directory: its latest checkpoint and tokenizer
    run_step: int | None = None  # that run's checkpoint of this step instead of its latest
    run_base: str | None = None  # the run's base model directory, when it is not where the run recorded it
    model: ModelSection | None = None  # or a model directory / preset (with `tokenizer`)
    tokenizer: str | None = None
    template: str | None = None  # default: the run's data.template (react for a model without a run)
    template_options: dict[str, Any] | None = None  # default: the run's data.template_options
    task: str = "hotpotqa"
    task_path: str = ""  # the task's data folder or file (unused by the generated world)
    task_options: dict[str, Any] = field(default_factory=dict)  # the task's own settings, e.g. the world's size
    split: str = "dev"
    limit: int | None = None
    tools: ToolsConfig = field(default_factory=ToolsConfig)  # for tasks that bring no tools of their own
    method: Literal["react", "cot", "reflexion"] = "react"
    max_steps: int = 11
    max_attempts: int = 2  # reflexion: answers checked against the gold before the episode ends
    system_prompt: str = ""  # "{tools}" in it becomes the episode's tools, one "- name[argument]: ..." line each
    system_prompt_file: str | None = None  # e.g. few-shot examples for a prompted (not fine-tuned) model
    few_shot: FewShotConfig | None = None  # or a system prompt built from worked training trajectories
    # a reply with no tool call: "invalid" tells the agent so; "answer" ends the episode with the answer it states
    # (after "the answer is" when it says that, as chat-format agents do; else the whole reply)
    reply_without_action: Literal["invalid", "answer"] = "invalid"
    conditioning: ConditioningConfig | None = None  # NAT: ask for the positive outcome (default: the run's)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tool_timeout_s: float = 60.0
    observation_max_chars: int = OBSERVATION_MAX_CHARS  # a longer tool observation is cut, the cut marked in it
    mesh: MeshConfig = field(default_factory=MeshConfig)
    output_dir: str = "runs/eval"
    seed: int = 0

    @classmethod
    def from_mapping(cls, data: dict, where: str) -> dict:
        """Configs written before the world became a task said `world:` for what is now `task_options:`."""
        if "world" in data:
            if "task_options" in data:
                raise ConfigError(f"{where}: world: and task_options: both given; world: is the old name of "
                                  "task_options: (the world's settings), keep one")
            data["task_options"] = data.pop("world")
        return data

    def validate(self):
        if (self.run is None) == (self.model is None):
            raise ConfigError("set exactly one of run (a training run directory) and model")
        if self.run_step is not None and self.run is None:
            raise ConfigError("run_step: needs run (the training run whose checkpoint it names)")
        if self.model is not None and self.tokenizer is None:
            raise ConfigError("model: needs tokenizer (a tokenizer file or model directory)")
        if sum(map(bool, (self.system_prompt, self.system_prompt_file, self.few_shot))) > 1:
            raise ConfigError("set one of system_prompt, system_prompt_file and few_shot")
        if self.tool_timeout_s <= 0 or self.observation_max_chars < 1:
            raise ConfigError("tool_timeout_s and observation_max_chars must be > 0")
        task_options(self.task, self.task_options)

    def system_prompt_text(self) -> str:
        """The system prompt: `system_prompt`, the file `system_prompt_file`, or the one `few_shot` builds."""
        if self.few_shot is not None:
            return self.few_shot.prompt()
        if not self.system_prompt_file:
            return self.system_prompt
        if not Path(self.system_prompt_file).is_file():
            raise ConfigError(f"system_prompt_file: {self.system_prompt_file} does not exist")
        return read_text(self.system_prompt_file)

    def with_run_defaults(self) -> "EvalConfig":
        """This config with the template and NAT conditioning the model was trained with, where not set."""
        data = None
        if self.run is not None:
            data = read_run_config(self.run, self.run_base).data
        trained_conditioning = data.conditioning if data and data.conditioning.mode != "none" else None
        return replace(
            self,
            template=self.template or (data.template if data else "react"),
            template_options=self.template_options if self.template_options is not None
            else dict(data.template_options) if data else {},
            conditioning=self.conditioning or trained_conditioning,
        )
