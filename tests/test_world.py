"""The generated world: deterministic from its seed, split regions that never share an entity, documents that state
the facts, ReAct tools with per-episode state, and the Task that scores it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest

from agentjax.configlib import ConfigError, from_dict
from agentjax.world.build import WorldConfig, build_world
from agentjax.world.task import WorldTask
from agentjax.world.entities import ORG_SUFFIXES, RELATIONS, read_fact
from agentjax.world.questions import QUESTION_KINDS
from agentjax.world.tools import WorldToolkit
from agentjax.tools.finish import RIGHT_ANSWER, WRONG_ANSWER
from agentjax.tools.base import run_action


@pytest.fixture(scope="module")
def world():
    return build_world()


def test_same_seed_gives_byte_identical_world_in_any_process(world):
    """Two builds with one seed serialise to the same bytes, also in fresh processes with other string-hash seeds."""
    assert build_world().to_json() == world.to_json()
    code = "from agentjax.world.build import build_world; print(build_world().digest())"
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == world.digest()


def test_different_seed_gives_different_world(world):
    """Another seed invents other names and asks other questions."""
    other = build_world(seed=1)
    assert other.digest() != world.digest()
    assert not set(other.entities) & set(world.entities)
    assert [q.question for q in other.questions["test"]] != [q.question for q in world.questions["test"]]


def test_generation_is_fast():
    """A world of 2,500 questions builds in well under a second (measured ~0.1 s; 1 s leaves room for a busy CI)."""
    start = time.perf_counter()
    built = build_world(WorldConfig(seed=7))
    assert sum(len(qs) for qs in built.questions.values()) == 2500
    assert time.perf_counter() - start < 1.0


def test_config_loads_from_yaml_shapes_and_rejects_unknown_kinds():
    """WorldConfig is a typed config: lists become tuples, and an unknown question kind is a ConfigError naming it."""
    config = from_dict(WorldConfig, {"seed": 3, "kinds": ["bridge", "arithmetic"]}, "world")
    assert config.kinds == ("bridge", "arithmetic")
    assert {q.meta["type"] for q in build_world(config).questions["test"]} == {"bridge", "arithmetic"}
    with pytest.raises(ConfigError, match="world: kinds: unknown question kinds \\['bridges'\\]"):
        from_dict(WorldConfig, {"kinds": ["bridges"]}, "world")


def test_sizes_kinds_and_interleaving(world):
    """Every split has the configured questions of every kind, interleaved so any prefix covers all kinds."""
    for split, per_kind in (("train", 400), ("dev", 50), ("test", 50)):
        questions = world.questions[split]
        assert Counter(q.meta["type"] for q in questions) == {k: per_kind for k in QUESTION_KINDS}
        assert [q.meta["type"] for q in questions[:5]] == list(QUESTION_KINDS)
        assert len({q.question for q in questions}) == len(questions)


def test_eval_entities_never_appear_in_training_questions(world):
    """Dev and test questions involve only their own region's entities; no train question names or reaches them,
    nor uses any word of their names (names are built of words no other entity uses)."""
    train_entities = {n for q in world.questions["train"] for n in q.meta["entities"]}
    train_words = set(re.findall(r"\w+", " ".join(q.question + " " + q.answer for q in world.questions["train"])))
    for split in ("dev", "test"):
        entities = {n for q in world.questions[split] for n in q.meta["entities"]}
        assert entities and entities <= set(world.regions[split].by_name)
        assert not entities & train_entities
        name_words = {w for n in world.regions[split].by_name for w in n.split()} - set(ORG_SUFFIXES)
        assert not name_words & train_words


def test_answers_are_balanced_and_well_posed(world):
    """Yes/no answers are near 50/50; comparisons name one of their two options; arithmetic answers are numbers."""
    questions = world.questions["train"]
    yes_no = Counter(q.answer for q in questions if q.meta["type"] == "yes_no")
    assert set(yes_no) == {"yes", "no"} and abs(yes_no["yes"] - yes_no["no"]) < 0.2 * sum(yes_no.values())
    for q in questions:
        if q.meta["type"] == "comparison":
            options = [h.subject for h in world.program(q).hops]
            assert q.answer in options and all(o in q.question for o in options)
        if q.meta["type"] == "arithmetic":
            assert q.answer.isdigit() and q.kind == "number"


def test_documents_state_every_fact(world):
    """Reading a relation back from an entity's document gives exactly the fact (the teacher relies on this)."""
    for entity in world.entities.values():
        text = " ".join(entity.document())
        for (kind, relation) in RELATIONS:
            if kind == entity.kind:
                assert read_fact(text, kind, entity.name, relation) == str(entity.facts[relation])


def test_search_and_lookup_follow_react_semantics(world):
    """search shows a document's first two sentences or similar titles; lookup walks sentences with the keyword."""
    toolkit = WorldToolkit(world, "test")
    person = world.regions["test"].of_kind["person"][0]
    document = world.entities[person].document()
    tools = toolkit.new_episode()
    assert run_action(tools, f"search[{person.upper()}]").observation == " ".join(document[:2])
    assert run_action(tools, "lookup[tall]").observation == f"(Result 1 / 1) {document[2]}"
    assert run_action(tools, "lookup[tall]").observation == "No more results."
    missing = run_action(tools, f"search[{person[:-1]}]").observation
    assert missing.startswith(f"Could not find {person[:-1]}. Similar: ['{person}', ")
    assert "search for an entity first" in run_action(tools, "lookup[tall]").observation


def test_each_episode_has_its_own_page(world):
    """A page opened in one episode is not open in another episode of the same toolkit."""
    toolkit = WorldToolkit(world, "test")
    first, second = toolkit.new_episode(), toolkit.new_episode()
    run_action(first, f"search[{world.regions['test'].of_kind['city'][0]}]")
    assert run_action(first, "lookup[inhabitants]").observation.startswith("(Result 1 / 1)")
    assert "search for an entity first" in run_action(second, "lookup[inhabitants]").observation


def test_search_sees_only_its_own_split(world):
    """The test split's search cannot find a training entity, and never suggests one."""
    train_city = world.regions["train"].of_kind["city"][0]
    observation = run_action(WorldToolkit(world, "test").new_episode(), f"search[{train_city}]").observation
    assert observation.startswith("Could not find")
    suggested = observation.split("Similar: ")[1]
    assert not [n for n in world.regions["train"].by_name if n in suggested]
    assert [n for n in world.regions["test"].by_name if f"'{n}'" in suggested]


def test_checked_finish_ends_only_on_a_right_answer(world):
    """Reflexion's finish says whether the answer is right; a wrong one leaves the episode running."""
    question = world.questions["test"][0]
    task = WorldTask(world)
    tools = WorldToolkit(world, "test").new_episode(lambda a: task.score(a, question)["em"] == 1.0)
    wrong = run_action(tools, "finish[nobody]")
    assert (wrong.observation, wrong.status) == (WRONG_ANSWER, "ok")
    right = run_action(tools, f"finish[{question.answer}]")
    assert (right.observation, right.status) == (RIGHT_ANSWER, "finished")


def test_world_task_loads_and_scores(world):
    """The Task gives a split's first questions and scores with SQuAD EM/F1; an unfinished episode scores 0."""
    task = WorldTask(world)
    questions = task.load(split="dev", limit=7)
    assert questions == world.questions["dev"][:7]
    q = questions[0]
    assert task.score(q.answer, q) == {"em": 1.0, "f1": 1.0}
    assert task.score(f"the {q.answer}.", q)["em"] == 1.0
    assert task.score("nobody", q)["em"] == 0.0
    assert task.score(None, q) == {"em": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="split"):
        task.load(split="validation")
