"""Scripted teachers for the world: they answer questions by calling the episode's real tools and write trajectories.

The scripted teacher reads every fact it uses from the tools' observations (never from the world's tables), so a
trajectory it solves shows that the documents and tools really answer the question. The noisy teacher makes one
mistake (wrong query, wrong hop, wrong arithmetic, giving up) and its trajectories are labeled with their scored
outcome, for NAT. `generate_trajectories` writes any mix of methods as Conversations.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Iterable

from agentjax.data.conversation import Conversation, Outcome, Turn
from agentjax.tasks.base import Question
from agentjax.world.general_chat import general_chat, general_exchange
from agentjax.world.trajectory_format import Step, chat_system_prompt, chat_turns, react_turns
from agentjax.world.build import World
from agentjax.world.task import WorldTask
from agentjax.world.entities import RELATIONS, read_fact
from agentjax.world.questions import Hop, Program, Region, calc_expression, conclude, gold_answer, hop_subject
from agentjax.world.tools import WorldToolkit
from agentjax.tools.base import Tool, run_action, tool_list

METHODS = ("react", "cot", "reflexion", "noisy", "chat", "no_tool", "general")
MISTAKES = ("wrong_query", "wrong_hop", "wrong_arithmetic", "give_up")
REFLECTIONS = {
    "wrong_query": "I searched for a name that is not in the documents. I must copy names exactly.",
    "wrong_hop": "I did not read the fact the question asks about. I must follow every step of the question.",
    "wrong_arithmetic": "My calculation was not the one the question asks for. I must compute exactly that.",
    "give_up": "I gave up too early. I must keep going until I find the answer.",
}
# A relation a careless reader takes for another one of the same entity (same kind of value).
_CONFUSED = {
    ("person", "birth_year"): "height", ("person", "height"): "birth_year", ("person", "birth_city"): "employer",
    ("city", "founded"): "population", ("city", "population"): "founded",
    ("organisation", "founded"): "employees", ("organisation", "employees"): "founded",
    ("country", "founded"): "population", ("country", "population"): "founded",
}
_WRONG_OPERATOR = {"+": "-", "-": "+", "*": "+"}
_FORMAT = {"react": "react", "cot": "cot", "reflexion": "reflexion", "noisy": "react", "chat": "chat",
           "no_tool": "chat", "general": "chat"}  # the Conversation.method each writer's text is in


class TeacherError(RuntimeError):
    """The tools did not give what the world's facts say they should: a bug in the world or its tools."""


class Attempt:
    """A run through one episode's tools that records every step."""

    def __init__(self, tools: dict[str, Tool]):
        self.tools = tools
        self.steps: list[Step] = []

    def act(self, thought: str, action: str) -> str:
        """Write a step, run its action with the tools exactly as the agent loop does, and return the observation."""
        result = run_action(self.tools, action)
        if result.status in ("invalid_action", "tool_error"):
            raise TeacherError(f"{action}: {result.observation}")
        self.steps.append(Step(thought, action, result.observation))
        return result.observation


def _sentence(text: str) -> str:
    """`text` capitalised and ended as a sentence, ready for the next one to follow."""
    return text[0].upper() + text[1:] + ". "


def _statement(region: Region, hop: Hop, values: list[str], value: str) -> str:
    """The fact a hop read, as a sentence: "Ulvar is in Tesmora. " """
    subject = hop_subject(hop, values)
    return _sentence(RELATIONS[(region.kind(subject), hop.relation)].state.format(s=subject, v=value))


def _read_hops(attempt: Attempt, region: Region, program: Program, lead: str = "") -> tuple[list[str], str]:
    """Search each hop's entity, look the fact up when the search result lacks it, and read it from the observation.

    Returns the values read and the sentence stating the last one (the next thought starts with it).
    """
    values: list[str] = []
    for hop in program.hops:
        subject = hop_subject(hop, values)
        kind = region.kind(subject)
        relation = RELATIONS[(kind, hop.relation)]
        wanted = relation.ask.format(s=subject)
        observation = attempt.act(f"{lead}I need to find {wanted}.", f"search[{subject}]")
        value = read_fact(observation, kind, subject, hop.relation)
        if value is None:
            observation = attempt.act(f"The result does not say {wanted}. I will look up {relation.keyword}.",
                                      f"lookup[{relation.keyword}]")
            value = read_fact(observation, kind, subject, hop.relation)
        if value is None:
            raise TeacherError(f"neither search[{subject}] nor lookup[{relation.keyword}] states {wanted}")
        lead = _statement(region, hop, values, value)
        values.append(value)
    return values, lead


def _reason(program: Program, values: list[str], answer: str, calculated: str | None) -> str:
    """The closing reasoning of a solution, ending "the answer is X."."""
    c, so = program.combine, f"so the answer is {answer}."
    if c == "calc":
        return f"{calc_expression(program, values)} is {calculated}, {so}"
    if c in ("min", "max"):
        low, high = sorted(values, key=int)
        return f"{low} is smaller than {high}, {so}" if c == "min" else f"{high} is larger than {low}, {so}"
    if c in ("less", "greater"):
        word = "smaller" if c == "less" else "larger"
        return f"{values[0]} is {'' if answer == 'yes' else 'not '}{word} than {values[1]}, {so}"
    if c == "same":
        return f"Both are {values[0]}, {so}" if answer == "yes" else f"{values[0]} is not {values[1]}, {so}"
    if c == "equals":
        return f"{values[-1]} is {'' if answer == 'yes' else 'not '}{program.operands[0]}, {so}"
    if c == "direct":
        return f"I can answer this without tools: the answer is {answer}."
    return f"So the answer is {answer}."


def _finish(attempt: Attempt, program: Program, values: list[str], lead: str) -> str:
    """Calculate when the program needs it, then finish with the answer the values give."""
    calculated = None
    if program.combine == "calc":
        expression = calc_expression(program, values)
        calculated = attempt.act(f"{lead}I need to calculate {expression}.", f"calculate[{expression}]")
        lead = ""
    answer = conclude(program, values, calculated)
    attempt.act(lead + _reason(program, values, answer, calculated), f"finish[{answer}]")
    return answer


def _wrong_hop(program: Program, region: Region) -> Program | None:
    """The program a careless reader follows: it stops one hop early, or reads a sibling fact at the last hop."""
    if not program.hops:
        return None
    last = program.hops[-1]
    if isinstance(last.subject, int):
        return dataclasses.replace(program, hops=program.hops[:-1])
    confused = _CONFUSED.get((region.kind(last.subject), last.relation))
    if confused is None:
        return None
    return dataclasses.replace(program, hops=program.hops[:-1] + (Hop(last.subject, confused),))


def _applies(mistake: str, program: Program, region: Region) -> bool:
    """Whether `mistake` can be made on this program (a wrong query needs a search, wrong arithmetic a calculation)."""
    if mistake == "wrong_query":
        return bool(program.hops)
    if mistake == "wrong_hop":
        return _wrong_hop(program, region) is not None
    if mistake == "wrong_arithmetic":
        return program.combine == "calc"
    return True


def _guess(world: World, question: Question, rng: random.Random) -> str:
    """A plausible wrong answer: the other option, the opposite yes/no, a nearby number, another entity of its kind."""
    gold, program, region = question.answer, world.program(question), world.region_of(question)
    if gold in ("yes", "no"):
        return "no" if gold == "yes" else "yes"
    if gold.isdigit():
        return str(int(gold) + rng.randint(1, 9))
    if program.combine in ("min", "max"):
        return next(h.subject for h in program.hops if h.subject != gold)
    return rng.choice([n for n in region.of_kind[region.kind(gold)] if n != gold])


def _misspelled(name: str, region: Region, rng: random.Random) -> str:
    """`name` with one letter (not the first) dropped, so that no document has that title."""
    while True:
        i = rng.randrange(1, len(name))
        typo = name[:i] + name[i + 1:]
        if name[i] != " " and typo not in region.by_name:
            return typo


def solve(attempt: Attempt, world: World, question: Question, mistake: str | None = None,
          rng: random.Random | None = None, lead: str = "") -> str:
    """Answer `question` with the attempt's tools, making `mistake` (None: solve it properly); returns the answer."""
    program, region = world.program(question), world.region_of(question)
    if mistake == "wrong_query":
        first = program.hops[0]
        typo = _misspelled(hop_subject(first, []), region, rng)
        wanted = RELATIONS[(region.kind(first.subject), first.relation)].ask.format(s=typo)
        attempt.act(f"{lead}I need to find {wanted}.", f"search[{typo}]")
        guess = _guess(world, question, rng)
        attempt.act(f"I could not find {typo}, so I will guess.", f"finish[{guess}]")
        return guess
    if mistake == "give_up":
        _, lead = _read_hops(attempt, region, dataclasses.replace(program, hops=program.hops[:1]), lead)
        attempt.act(f"{lead}I cannot work out the answer, so I give up.", "finish[unknown]")
        return "unknown"
    if mistake == "wrong_hop":
        program = _wrong_hop(program, region)
    elif mistake == "wrong_arithmetic":
        program = dataclasses.replace(program, operator=_WRONG_OPERATOR[program.operator])
    values, lead = _read_hops(attempt, region, program, lead)
    return _finish(attempt, program, values, lead)


def cot_thought(world: World, question: Question) -> tuple[str, str]:
    """A chain of thought stating, from memory, every fact the solution needs; returns (thought, answer)."""
    program, region = world.program(question), world.region_of(question)
    answer, values = gold_answer(program, region)
    stated = "".join(_statement(region, hop, values, v) for hop, v in zip(program.hops, values))
    return stated + _reason(program, values, answer, answer if program.combine == "calc" else None), answer


class Teacher:
    """Writes trajectories for one split of a world, with that split's tools and the world's scorer.

    Each writer takes (question, rng) and returns a Conversation, a list of them, or None when it has none to give.
    """

    def __init__(self, world: World, split: str):
        self.world, self.split = world, split
        self.task = WorldTask(world)
        self.toolkit = WorldToolkit(world, split)
        self.chat_system = chat_system_prompt(tool_list(self.toolkit.new_episode()))

    def _conversation(self, question: Question, method: str, turns: list[Turn], answer: str | None,
                      id_suffix: str = "", **meta: str) -> Conversation:
        """A Conversation with source `world-<method>` and an id from the question; the outcome is the scored
        `answer`, or success for general chat (`answer` None: its reply is correct by construction)."""
        seed = self.world.config.seed
        common = dict(turns=tuple(turns), source=f"world-{method}", method=_FORMAT[method],
                      origin=f"world(seed={seed})", id=f"world{seed}/{question.id}/{method}{id_suffix}")
        if answer is None:
            return Conversation(**common, task="general", outcome=Outcome(success=True))
        scores = self.task.score(answer, question)
        return Conversation(
            **common, task="world",
            outcome=Outcome(success=scores["em"] == 1.0, reward=scores["em"], f1=scores["f1"]),
            meta={"question_id": question.id, "type": question.meta["type"], **meta},
        )

    def react(self, question: Question, rng: random.Random) -> Conversation:
        """Search, look up and calculate step by step, then finish: FireAct's ReAct trajectory."""
        attempt = Attempt(self.toolkit.new_episode())
        answer = solve(attempt, self.world, question)
        return self._conversation(question, "react", react_turns(question.question, attempt.steps), answer)

    def cot(self, question: Question, rng: random.Random) -> Conversation:
        """One thought from memory, then finish; no tools."""
        thought, answer = cot_thought(self.world, question)
        turns = react_turns(question.question, [Step(thought, f"finish[{answer}]", "")])
        return self._conversation(question, "cot", turns, answer)

    def _failed_attempt(self, question: Question, rng: random.Random,
                        checked: bool) -> tuple[Attempt, str, str] | None:
        """An attempt with one mistake that really ends in a wrong answer: (attempt, mistake, answer), or None."""
        program, region = self.world.program(question), self.world.region_of(question)
        mistakes = [m for m in MISTAKES if _applies(m, program, region)]
        rng.shuffle(mistakes)
        is_correct = (lambda a: self.task.score(a, question)["em"] == 1.0) if checked else None
        for mistake in mistakes:
            attempt = Attempt(self.toolkit.new_episode(is_correct))
            answer = solve(attempt, self.world, question, mistake, rng)
            if self.task.score(answer, question)["em"] < 1.0:
                return attempt, mistake, answer
        return None  # every mistake happened to give the right answer anyway

    def noisy(self, question: Question, rng: random.Random) -> Conversation | None:
        """A ReAct trajectory with one mistake, labeled with its scored (failed) outcome: a NAT negative."""
        failed = self._failed_attempt(question, rng, checked=False)
        if failed is None:
            return None
        attempt, mistake, answer = failed
        turns = react_turns(question.question, attempt.steps)
        return self._conversation(question, "noisy", turns, answer, mistake=mistake)

    def reflexion(self, question: Question, rng: random.Random) -> Conversation | None:
        """A failed attempt, the checked finish's feedback, a reflection on the mistake, and a retry that succeeds."""
        failed = self._failed_attempt(question, rng, checked=True)
        if failed is None:
            return None
        attempt, mistake, _ = failed
        answer = solve(attempt, self.world, question, lead=REFLECTIONS[mistake] + " ")
        turns = react_turns(question.question, attempt.steps)
        return self._conversation(question, "reflexion", turns, answer, mistake=mistake)

    def chat(self, question: Question, rng: random.Random) -> Conversation | None:
        """The ReAct solution as natural chat: tool calls at the end of replies, results as tool turns."""
        if question.meta["type"] == "direct":
            return None  # answered without tools: those are `no_tool` examples
        attempt = Attempt(self.toolkit.new_episode())
        answer = solve(attempt, self.world, question)
        turns = chat_turns(self.chat_system, question.question, attempt.steps)
        return self._conversation(question, "chat", turns, answer)

    def no_tool(self, question: Question, rng: random.Random) -> list[Conversation]:
        """Agent-FLAN negatives: tools are offered but none applies, so the reply answers directly.

        For each direct question: that question, and a general request, both in chat format.
        """
        if question.meta["type"] != "direct":
            return []
        attempt = Attempt(self.toolkit.new_episode())
        answer = solve(attempt, self.world, question)
        direct = self._conversation(question, "no_tool", chat_turns(self.chat_system, question.question, attempt.steps),
                                    answer)
        request, reply = general_exchange(rng)
        turns = [Turn("system", self.chat_system), Turn("user", request), Turn("assistant", reply, train=True)]
        return [direct, self._conversation(question, "no_tool", turns, None, id_suffix="-request")]

    def general(self, question: Question, rng: random.Random) -> Conversation:
        """General chat without tools (AgentTuning's mix); one per question, seeded by it."""
        turns = [Turn(role, text, train=role == "assistant")
                 for request, reply in general_chat(rng) for role, text in (("user", request), ("assistant", reply))]
        return self._conversation(question, "general", turns, None)


def generate_trajectories(world: World, split: str = "train", methods: Iterable[str] = ("react",),
                          limit: int | None = None) -> list[Conversation]:
    """Trajectories of each method for the first `limit` questions of `split`, in memory, deterministic for the world.

    methods: react, cot, reflexion (FireAct); noisy (NAT negatives, failed and labeled); chat, no_tool
    (Agent-FLAN chat format and its no-tool negatives); general (general chat, AgentTuning's mix).
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    teacher = Teacher(world, split)
    conversations = []
    for method in methods:
        write: Callable = getattr(teacher, method)
        for question in world.questions[split][:limit]:
            made = write(question, random.Random(f"{world.config.seed}/{question.id}/{method}"))
            conversations += made if isinstance(made, list) else [] if made is None else [made]
    return conversations
