"""Generate the tool-use world: invented entities, their documents and questions, in train/dev/test splits.

Each split is its own region: its people, places and organisations refer only to one another, so no entity
of a dev or test question ever appears in training text, and answering needs the tools, not memory.
Everything derives from `random.Random(seed)`: the same seed gives a byte-identical world.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import asdict, dataclass

from agentjax.configlib import ConfigError, ConfigSection
from agentjax.tasks.base import Question
from agentjax.world.entities import Entity, NameMaker, RegionSize, make_region
from agentjax.world.questions import QUESTION_KINDS, Program, Region, draw_questions, gold_answer

SPLITS = ("train", "dev", "test")
_ANSWER_KINDS = {"yes_no": "yes_no", "arithmetic": "number"}


@dataclass
class WorldConfig(ConfigSection):
    """Size and seed of the world: entity counts over all splits, each split's share, questions per kind."""

    seed: int = 0
    countries: int = 20
    cities: int = 120
    organisations: int = 80
    people: int = 400
    dev_share: float = 0.1
    test_share: float = 0.2
    train_questions_per_kind: int = 400
    eval_questions_per_kind: int = 50  # for dev and for test
    kinds: tuple[str, ...] = QUESTION_KINDS

    def validate(self):
        unknown = [k for k in self.kinds if k not in QUESTION_KINDS]
        if unknown:
            raise ConfigError(f"kinds: unknown question kinds {unknown}; choose from {list(QUESTION_KINDS)}")
        if not (0 < self.dev_share and 0 < self.test_share and self.dev_share + self.test_share < 1):
            raise ConfigError("dev_share and test_share must be > 0 and sum to less than 1")

    def region_size(self, split: str) -> RegionSize:
        """Entity counts of one split (at least enough to link every kind)."""
        share = {"train": 1 - self.dev_share - self.test_share, "dev": self.dev_share, "test": self.test_share}[split]

        def scaled(total: int, least: int) -> int:
            return max(least, round(total * share))

        return RegionSize(scaled(self.countries, 2), scaled(self.cities, 4), scaled(self.organisations, 2),
                          scaled(self.people, 8))

    def questions_per_kind(self, split: str) -> int:
        """How many questions of each kind `split` gets."""
        return self.train_questions_per_kind if split == "train" else self.eval_questions_per_kind


class World:
    """Entities with facts and documents, and each split's questions with the programs that answer them."""

    def __init__(self, config: WorldConfig, entities: list[Entity], questions: dict[str, list[Question]],
                 programs: dict[str, Program]):
        self.config = config
        self.entities = {e.name: e for e in entities}
        self.regions = {s: Region([e for e in entities if e.split == s]) for s in SPLITS}
        self.questions = questions
        self.programs = programs

    def documents(self, split: str) -> dict[str, tuple[str, ...]]:
        """Title -> sentences of every document of one split's region (what its search tool can find)."""
        return {name: self.entities[name].document() for name in self.regions[split].by_name}

    def program(self, question: Question) -> Program:
        """The program that answers a question of this world."""
        return self.programs[question.id]

    def region_of(self, question: Question) -> Region:
        """The region (split) a question of this world is about."""
        return self.regions[question.meta["split"]]

    def to_json(self) -> str:
        """The whole world as canonical JSON (sorted keys): equal worlds give equal text."""
        return json.dumps({
            "config": asdict(self.config),
            "entities": [asdict(e) for e in self.entities.values()],
            "questions": {s: [asdict(q) for q in qs] for s, qs in self.questions.items()},
            "programs": {i: asdict(p) for i, p in self.programs.items()},
        }, sort_keys=True)

    def digest(self) -> str:
        """SHA-256 of `to_json()`: a short fingerprint to compare worlds."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def build_world(config: WorldConfig | None = None, seed: int | None = None) -> World:
    """Generate the world of `config` (its seed, or `seed` when given)."""
    config = config or WorldConfig()
    if seed is not None:
        config = WorldConfig(**{**asdict(config), "seed": seed})
    config.validate()
    rng = random.Random(config.seed)
    names = NameMaker(rng)
    entities = [e for split in SPLITS for e in make_region(rng, names, split, config.region_size(split))]
    world = World(config, entities, {}, {})
    for split in SPLITS:
        by_kind = []
        for kind in config.kinds:
            drawn = draw_questions(rng, world.regions[split], kind, config.questions_per_kind(split))
            by_kind.append([_question(f"{split}-{kind}-{i:04d}", text, kind, split, program, mentioned,
                                      world.regions[split]) for i, (text, program, mentioned) in enumerate(drawn)])
            world.programs.update((q.id, program) for q, (_, program, _) in zip(by_kind[-1], drawn))
        # Interleave the kinds, so that the first N questions of a split cover every kind evenly.
        world.questions[split] = [q for group in itertools.zip_longest(*by_kind) for q in group if q is not None]
    return world


def _question(qid: str, text: str, kind: str, split: str, program: Program, mentioned: list[str],
              region: Region) -> Question:
    """A Question with its gold answer and metadata: type, split, and every entity it involves (named or reached)."""
    answer, values = gold_answer(program, region)
    entities = tuple(dict.fromkeys(n for n in mentioned + values + [answer] if n in region.by_name))
    return Question(id=qid, question=text, answers=(answer,), kind=_ANSWER_KINDS.get(kind, "text"),
                    meta={"type": kind, "split": split, "entities": entities})

