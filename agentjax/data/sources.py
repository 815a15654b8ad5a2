"""Load configured sources for training: read, assign metadata, filter, condition on outcome, check trainability."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from agentjax.data.conditioning import condition_on_outcome
from agentjax.data.config import ConditioningConfig, SourceConfig
from agentjax.data.conversation import Conversation
from agentjax.util.errors import BadInputPolicy, DataError
from agentjax.data.formats import read_conversations
from agentjax.data.templates import Template


@dataclass
class LoadedSource:
    """A source's usable conversations in file order, with what was skipped (by reason) or filtered out."""

    name: str
    weight: float
    conversations: list[Conversation]
    bad_input: Counter = field(default_factory=Counter)
    filtered: int = 0


def load_source(config: SourceConfig, template: Template, conditioning: ConditioningConfig, bad_input: str = "raise") -> LoadedSource:
    """Read every file of `config` into memory; bad records and untrainable examples raise or are counted."""
    name = config.display_name
    policy = BadInputPolicy(bad_input)
    loaded = LoadedSource(name, config.weight, [], policy.counts)
    for path in config.paths:
        for conv in read_conversations(path, config.format, bad_input=policy):
            if config.outcome is not None:
                conv = conv.replace(outcome=replace(conv.outcome, success=config.outcome == "success"))
            if not _kept(conv, config):
                loaded.filtered += 1
                continue
            conv = conv.replace(source=name, task=config.task or conv.task, method=config.method or conv.method)
            try:
                conv = condition_on_outcome(conv, conditioning)
                if not any(template.trained(t) for t in conv.turns):
                    raise DataError(conv.origin, "nothing_to_train", f"no turn is trained by template {template.name!r} (no assistant turn, or every loss flag false)")
            except DataError as e:
                policy.handle(e)
                continue
            loaded.conversations.append(conv)
            if config.limit is not None and len(loaded.conversations) >= config.limit:
                return loaded
    if not loaded.conversations:
        raise DataError(str(config.paths[0]), "empty_source", f"source {name!r} has no usable conversation "
                        f"(filtered out: {loaded.filtered}, skipped: {dict(loaded.bad_input)})")
    return loaded


def source_counts(sources: list[LoadedSource]) -> Counter:
    """Counters of what loading did: conversations kept and filtered per source, bad input by reason."""
    counts: Counter = Counter()
    for s in sources:
        counts[f"source/{s.name}/conversations"] = len(s.conversations)
        counts[f"source/{s.name}/filtered"] = s.filtered
        for reason, n in s.bad_input.items():
            counts[f"bad_input/{reason}"] += n
            counts[f"source/{s.name}/bad_input/{reason}"] += n
    return counts


def _kept(conv: Conversation, config: SourceConfig) -> bool:
    """Whether the source's method and outcome filters keep this conversation."""
    if config.keep_methods and conv.method not in config.keep_methods:
        return False
    if config.keep_outcome == "any":
        return True
    return conv.outcome.success is (config.keep_outcome == "success")
