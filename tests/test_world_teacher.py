"""The world's teachers: the scripted one solves every clean question through the real tools, its trajectories carry
exactly the tools' observations, the noisy one's failures are labeled, and no eval entity leaks into training."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from agentjax.data.conversation import Conversation
from agentjax.world.teacher import METHODS, MISTAKES, REFLECTIONS, Teacher, generate_trajectories
from agentjax.agent.methods import ANSWER_CUE, extract_action, stated_answer
from agentjax.world.build import SPLITS, WorldConfig, build_world
from agentjax.world.task import WorldTask
from agentjax.world.entities import ORG_SUFFIXES
from agentjax.world.questions import QUESTION_KINDS
from agentjax.world.tools import WorldToolkit
from agentjax.tools.finish import WRONG_ANSWER
from agentjax.tools.base import parse_action, run_action
from agentjax.tools.wikipedia import Page


@pytest.fixture(scope="module")
def world():
    return build_world()


@pytest.fixture(scope="module")
def train(world) -> dict[str, list[Conversation]]:
    """Every method's training trajectories, by method."""
    return {m: generate_trajectories(world, "train", [m]) for m in METHODS}


def _action(turn) -> str:
    """The action text an assistant turn ends with (`Action: search[X]` in ReAct, the last line in chat)."""
    return turn.content.splitlines()[-1].removeprefix("Action: ")


def _final_answer(conv: Conversation) -> str:
    """The answer of a trajectory's last assistant turn: finish[...] in ReAct, "the answer is ..." in chat."""
    last = conv.turns[-1]
    action = parse_action(_action(last))
    return action.argument if action and action.name == "finish" else stated_answer(last.content)


def test_scripted_teacher_solves_every_clean_question(world):
    """ReAct, chat and CoT trajectories of every question of every split score EM 1 with the real scorer."""
    task = WorldTask(world)
    for split in SPLITS:
        questions = {q.id: q for q in world.questions[split]}
        convs = generate_trajectories(world, split, ["react", "chat", "cot"])
        assert len(convs) == 3 * len(questions) - sum(q.meta["type"] == "direct" for q in questions.values())
        for conv in convs:
            question = questions[conv.meta["question_id"]]
            assert task.score(_final_answer(conv), question) == {"em": 1.0, "f1": 1.0}, conv.id
            assert conv.outcome.success and conv.outcome.reward == 1.0


def test_teacher_reads_answers_from_the_tools_not_the_facts(world):
    """Change what search returns for one document and the teacher's answer follows the document, and fails."""
    teacher = Teacher(world, "test")
    question = next(q for q in world.questions["test"] if q.question.startswith("In what year was the employer of"))
    employer = question.meta["entities"][1]
    encyclopedia = teacher.toolkit.encyclopedia
    key = employer.casefold()
    page = encyclopedia.pages[key]
    encyclopedia.pages[key] = Page(page.title, page.text.replace(f"founded in {question.answer}", "founded in 1111"))
    conv = teacher.react(question, None)
    assert _final_answer(conv) == "1111"
    assert conv.outcome.success is False


def _replay(conv: Conversation, toolkit: WorldToolkit, task: WorldTask, question) -> int:
    """Re-run a trajectory's actions on fresh tools; assert every observation turn is what the tool returns now."""
    checked = (lambda a: task.score(a, question)["em"] == 1.0) if conv.method == "reflexion" else None
    tools = toolkit.new_episode(checked)
    count = 0
    for previous, turn in zip(conv.turns, conv.turns[1:]):
        if turn.role == "tool":
            assert previous.role == "assistant"
            assert run_action(tools, _action(previous)).observation == turn.content, conv.id
            count += 1
    return count


def test_every_observation_is_exactly_what_the_tools_return(world, train):
    """Replaying each trajectory's actions through new tool objects reproduces each observation byte for byte."""
    task, toolkit = WorldTask(world), WorldToolkit(world, "train")
    questions = {q.id: q for q in world.questions["train"]}
    replayed = Counter()
    for method in ("react", "reflexion", "noisy", "chat"):
        for conv in train[method]:
            replayed[method] += _replay(conv, toolkit, task, questions[conv.meta["question_id"]])
    assert all(replayed[m] > len(train[m]) for m in ("react", "reflexion", "chat"))  # more than one per trajectory
    assert replayed["noisy"] > 0


def test_noisy_failures_are_labeled_failures(world, train):
    """Each noisy trajectory ends in a wrong answer, is labeled failed with its true EM/F1, and all mistakes occur."""
    task = WorldTask(world)
    questions = {q.id: q for q in world.questions["train"]}
    noisy = train["noisy"]
    assert len(noisy) == len(questions)
    for conv in noisy:
        scores = task.score(_final_answer(conv), questions[conv.meta["question_id"]])
        assert scores["em"] == 0.0 and scores["f1"] < 1.0
        assert conv.outcome.success is False
        assert (conv.outcome.reward, conv.outcome.f1) == (scores["em"], scores["f1"])
    assert set(Counter(c.meta["mistake"] for c in noisy)) == set(MISTAKES)


def test_reflexion_fails_reflects_and_succeeds(train):
    """Reflexion: a wrong finish, the checked finish's feedback, a reflection on that mistake, then a right answer."""
    for conv in train["reflexion"]:
        roles = [t.role for t in conv.turns]
        feedback = roles.index("tool", [i for i, t in enumerate(conv.turns) if t.content == WRONG_ANSWER][0])
        assert parse_action(_action(conv.turns[feedback - 1])).name == "finish"
        assert conv.turns[feedback + 1].content.startswith("Thought: " + REFLECTIONS[conv.meta["mistake"]])
        assert conv.outcome.success


def test_cot_uses_no_tools(train):
    """CoT: the question, one thought and finish; no observation at all."""
    for conv in train["cot"]:
        assert [t.role for t in conv.turns] == ["user", "assistant"]
        assert _action(conv.turns[1]).startswith("finish[")


def test_no_tool_negatives_never_call_a_tool(train):
    """With tools offered in the system turn, no-tool examples answer directly: no reply is a tool call."""
    negatives = train["no_tool"]
    assert negatives and all(c.turns[0].role == "system" and "search[" in c.turns[0].content for c in negatives)
    for conv in negatives:
        assert all(extract_action(t.content) is None for t in conv.turns if t.role == "assistant")
        assert "tool" not in [t.role for t in conv.turns]


def test_chat_format_is_natural_and_parseable(train):
    """Chat replies carry no Thought/Action labels; tool calls are their last line; the final reply names the answer."""
    for conv in train["chat"]:
        replies = [t for t in conv.turns if t.role == "assistant"]
        assert not [t for t in replies if "Thought:" in t.content or "Action:" in t.content]
        assert all(extract_action(t.content) is not None for t in replies[:-1])
        assert extract_action(replies[-1].content) is None and ANSWER_CUE in replies[-1].content


def test_calculator_questions_need_the_calculator(world, train):
    """Every arithmetic answer appears nowhere before the calculate step (not in the question, not in any
    observation) and is exactly what the calculator returned."""
    questions = {q.id: q for q in world.questions["train"]}
    arithmetic = [c for c in train["react"] if c.meta["type"] == "arithmetic"]
    assert len(arithmetic) == 400
    for conv in arithmetic:
        answer = questions[conv.meta["question_id"]].answer
        calc = next(i for i, t in enumerate(conv.turns) if t.role == "assistant" and "Action: calculate[" in t.content)
        seen = " ".join(t.content for t in conv.turns[:calc] if t.role != "assistant")
        assert answer not in re.findall(r"\d+", seen), conv.id
        assert conv.turns[calc + 1].role == "tool" and conv.turns[calc + 1].content == answer


def test_training_text_never_shows_an_eval_entity(world, train):
    """No word of any dev or test entity's name appears in any training trajectory of any method."""
    words = set()
    for convs in train.values():
        for conv in convs:
            words.update(re.findall(r"\w+", " ".join(t.content for t in conv.turns)))
    for split in ("dev", "test"):
        name_words = {w for n in world.regions[split].by_name for w in n.split()} - set(ORG_SUFFIXES)
        assert not name_words & words


def test_metadata_and_train_flags(train):
    """Assistant turns are trained and nothing else; ids are unique; source, task, method and origin are set."""
    all_convs = [c for convs in train.values() for c in convs]
    assert len({c.id for c in all_convs}) == len(all_convs)
    for conv in all_convs:
        assert all(t.train == (t.role == "assistant") for t in conv.turns)
        assert conv.source.startswith("world-") and conv.task in ("world", "general") and conv.origin
        assert conv.method in ("react", "cot", "reflexion", "chat")
    assert {c.method for c in train["noisy"]} == {"react"}


def test_generation_is_deterministic(world, train):
    """The same world gives the same trajectories; unknown methods are an error naming the choices."""
    assert generate_trajectories(world, "train", ["noisy", "reflexion"], limit=50) == \
        [c for c in train["noisy"][:50]] + [c for c in train["reflexion"][:50]]
    assert generate_trajectories(build_world(), "train", ["react"], limit=20) == train["react"][:20]
    with pytest.raises(ValueError, match="react"):
        generate_trajectories(world, "train", ["fireact"])


def test_smallest_world_still_works():
    """A region of 2 countries, 4 cities, 2 organisations and 8 people builds (no endless redraws) and the scripted
    teacher solves all of its questions of every kind."""
    world = build_world(WorldConfig(countries=2, cities=4, organisations=2, people=8, train_questions_per_kind=20,
                                    eval_questions_per_kind=5))
    for split in SPLITS:
        assert {q.meta["type"] for q in world.questions[split]} == set(QUESTION_KINDS)
        assert all(c.outcome.success for c in generate_trajectories(world, split, ["react"]))
