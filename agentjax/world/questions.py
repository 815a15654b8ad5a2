"""Questions about the generated world, each with the program that answers it: which facts to read, how to combine them.

Kinds: bridge (two hops), comparison (two searches, pick one), yes_no (StrategyQA-like), arithmetic (GSM8K-like,
needs the calculator) and direct (answerable from the question alone: no tool applies).
"""

from __future__ import annotations

import operator
import random
import re
from dataclasses import dataclass
from typing import Callable, Literal, NoReturn

from agentjax.world.entities import HOBBIES, KINDS, LANDMARKS, PRODUCTS, Entity

QUESTION_KINDS = ("bridge", "comparison", "yes_no", "arithmetic", "direct")
Combine = Literal["last", "min", "max", "same", "less", "greater", "equals", "calc", "direct"]
OPERATORS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@dataclass(frozen=True)
class Hop:
    """Read `relation` of an entity: a name given in the question, or (an int) the value an earlier hop read."""

    subject: str | int
    relation: str


@dataclass(frozen=True)
class Program:
    """How a question is answered: hops that each read one fact, then how the values read give the answer.

    `operands` are, for `calc`, hop indices (int) or literal numbers (str) joined by `operator`; for `equals` the
    value the last hop is compared with; for `direct` the answer itself.
    """

    hops: tuple[Hop, ...]
    combine: Combine
    operands: tuple[int | str, ...] = ()
    operator: str = ""


class Region:
    """One split's entities, indexed by name and by kind."""

    def __init__(self, entities: list[Entity]):
        self.by_name = {e.name: e for e in entities}
        self.of_kind = {k: [e.name for e in entities if e.kind == k] for k in KINDS}

    def fact(self, name: str, relation: str) -> str:
        """The value of `relation` for entity `name`, as the document writes it."""
        return str(self.by_name[name].facts[relation])

    def kind(self, name: str) -> str:
        """The kind of entity `name` (person, city, country, organisation)."""
        return self.by_name[name].kind


def hop_subject(hop: Hop, values: list[str]) -> str:
    """The entity a hop reads from: its own name, or the value an earlier hop read."""
    return values[hop.subject] if isinstance(hop.subject, int) else hop.subject


def calc_expression(program: Program, values: list[str]) -> str:
    """The arithmetic a `calc` program sends to the calculator, e.g. "1874 - 1802"."""
    return f" {program.operator} ".join(values[o] if isinstance(o, int) else o for o in program.operands)


def conclude(program: Program, values: list[str], calculated: str | None = None) -> str:
    """The answer a program gives from the values its hops read (and the calculator's result, for `calc`)."""
    c = program.combine
    if c == "last":
        return values[-1]
    if c in ("min", "max"):
        pick = min if c == "min" else max
        best = pick(range(len(values)), key=lambda i: int(values[i]))
        return hop_subject(program.hops[best], values)
    if c == "calc":
        if calculated is None:
            raise ValueError("a calc program needs the calculator's result")
        return calculated
    if c == "direct":
        return str(program.operands[0])
    truth = {
        "same": lambda: values[0] == values[1],
        "less": lambda: int(values[0]) < int(values[1]),
        "greater": lambda: int(values[0]) > int(values[1]),
        "equals": lambda: values[-1] == program.operands[0],
    }[c]()
    return "yes" if truth else "no"


def gold_answer(program: Program, region: Region) -> tuple[str, list[str]]:
    """The answer computed from the facts themselves (no documents, no tools), and the values each hop read."""
    values: list[str] = []
    for hop in program.hops:
        values.append(region.fact(hop_subject(hop, values), hop.relation))
    calculated = None
    if program.combine == "calc":
        numbers = [int(values[o]) if isinstance(o, int) else int(o) for o in program.operands]
        result = numbers[0]
        for n in numbers[1:]:
            result = OPERATORS[program.operator](result, n)
        calculated = str(result)
    return conclude(program, values, calculated), values


class _Rejected(Exception):
    """The draw cannot make a good question (e.g. a trivial one, or no two entities that differ): draw again."""


def _reject(reason: str) -> NoReturn:
    """Give up on the question being drawn."""
    raise _Rejected(reason)


class _Draw:
    """Random choices from one region, with the retry that rejection sampling needs."""

    def __init__(self, rng: random.Random, region: Region):
        self.rng, self.region = rng, region
        self.picked: list[str] = []  # the entities handed out for the question being made

    def pick(self, names: list[str]) -> str:
        """One of `names`, remembered as an entity the question involves."""
        self.picked.append(self.rng.choice(names))
        return self.picked[-1]

    def one(self, kind: str) -> str:
        """An entity of `kind`."""
        return self.pick(self.region.of_kind[kind])

    def two(self, kind: str, relation: str | None = None) -> tuple[str, str]:
        """Two different entities of `kind` (with different values of `relation`, when given)."""
        for _ in range(50):
            a, b = self.rng.sample(self.region.of_kind[kind], 2)
            if relation is None or self.region.fact(a, relation) != self.region.fact(b, relation):
                self.picked += [a, b]
                return a, b
        raise _Rejected(f"no two {kind} entities with different {relation}")


# (question, subject kind, first relation, second relation)
_BRIDGES = (
    ("In which country was {0} born?", "person", "birth_city", "country"),
    ("Who leads the organisation that {0} works for?", "person", "employer", "leader"),
    ("In what year was the employer of {0} founded?", "person", "employer", "founded"),
    ("How many inhabitants does the birthplace of {0} have?", "person", "birth_city", "population"),
    ("In which country is {0} based?", "organisation", "city", "country"),
    ("Where was the leader of {0} born?", "organisation", "leader", "birth_city"),
    ("In what year was the leader of {0} born?", "organisation", "leader", "birth_year"),
    ("What is the capital of the country that {0} is in?", "city", "country", "capital"),
)

# (question, kind of both options, relation compared, which extreme wins)
_COMPARISONS = (
    ("Which was founded first, {0} or {1}?", "organisation", "founded", "min"),
    ("Which organisation has more employees, {0} or {1}?", "organisation", "employees", "max"),
    ("Who was born first, {0} or {1}?", "person", "birth_year", "min"),
    ("Who is taller, {0} or {1}?", "person", "height", "max"),
    ("Which city has more inhabitants, {0} or {1}?", "city", "population", "max"),
    ("Which city is older, {0} or {1}?", "city", "founded", "min"),
)


def _bridge(d: _Draw) -> tuple[str, Program]:
    """Two hops: read a relation of the named entity, then a relation of the entity it points to."""
    text, kind, first, second = d.rng.choice(_BRIDGES)
    subject = d.one(kind)
    if d.region.fact(d.region.fact(subject, first), second) == subject:
        _reject("the answer is the subject itself, e.g. the leader of the organisation X works for is X")
    return text.format(subject), Program((Hop(subject, first), Hop(0, second)), "last")


def _comparison(d: _Draw) -> tuple[str, Program]:
    """Two searches: which of two entities has the smaller or larger value of one relation."""
    text, kind, relation, extreme = d.rng.choice(_COMPARISONS)
    a, b = d.two(kind, relation)
    return text.format(a, b), Program((Hop(a, relation), Hop(b, relation)), extreme)


def _yes_no(d: _Draw) -> tuple[str, Program]:
    """A yes/no question whose answer is drawn first, so that yes and no are equally common."""
    want = "yes" if d.rng.random() < 0.5 else "no"
    text, program = _yes_no_candidate(d, want == "yes")
    if gold_answer(program, d.region)[0] != want:
        _reject(f"the answer is not {want}")
    return text, program


def _yes_no_candidate(d: _Draw, want_yes: bool) -> tuple[str, Program]:
    """A yes/no question, built to have the wanted answer where the form allows it (the caller checks)."""
    r = d.region
    form = d.rng.randrange(5)
    if form == 0:
        a = d.one("person")
        city = r.fact(a, "birth_city")
        same = [p for p in r.of_kind["person"] if p != a and r.fact(p, "birth_city") == city]
        others = [p for p in r.of_kind["person"] if r.fact(p, "birth_city") != city]
        pool = same if want_yes else others
        b = d.pick(pool) if pool else _reject(f"no other person born {'in' if want_yes else 'outside'} {city}")
        return f"Were {a} and {b} born in the same city?", Program((Hop(a, "birth_city"), Hop(b, "birth_city")), "same")
    if form == 1:
        p, o = d.one("person"), d.one("organisation")
        program = Program((Hop(p, "birth_year"), Hop(o, "founded")), "less")
        return f"Was {p} born before {o} was founded?", program
    if form == 2:
        a, b = d.two("city", "population")
        program = Program((Hop(a, "population"), Hop(b, "population")), "greater")
        return f"Does {a} have more inhabitants than {b}?", program
    if form == 3:
        o = d.one("organisation")
        truth = r.fact(r.fact(o, "city"), "country")
        country = truth if want_yes else d.pick([k for k in r.of_kind["country"] if k != truth])
        return f"Is {o} based in {country}?", Program((Hop(o, "city"), Hop(0, "country")), "equals", (country,))
    p = d.one("person")
    truth = r.fact(r.fact(p, "employer"), "leader")
    if truth == p:
        _reject(f"{p} leads the organisation they work for")
    leader = truth if want_yes else d.pick([q for q in r.of_kind["person"] if q not in (truth, p)])
    program = Program((Hop(p, "employer"), Hop(0, "leader")), "equals", (leader,))
    return f"Does {p} work for an organisation led by {leader}?", program


def _arithmetic(d: _Draw) -> tuple[str, Program]:
    """Arithmetic that needs the calculator: its answer (at least 10) is no number of the question or of any
    document the solution reads, so it cannot be copied from anywhere."""
    text, program = _arithmetic_candidate(d)
    answer, _ = gold_answer(program, d.region)
    read = " ".join(s for h in program.hops for s in d.region.by_name[h.subject].document())
    if int(answer) < 10 or answer in re.findall(r"\d+", f"{text} {read}"):
        _reject("the answer could be copied instead of calculated")
    return text, program


def _arithmetic_candidate(d: _Draw) -> tuple[str, Program]:
    """Arithmetic on facts read with the tools, or on numbers given in the question."""
    rng, r = d.rng, d.region
    form = rng.randrange(6)
    if form == 0:
        a, b = sorted(d.two("organisation", "founded"), key=lambda o: int(r.fact(o, "founded")))
        text = f"How many years after {a} was {b} founded?"
        return text, Program((Hop(a, "founded"), Hop(b, "founded")), "calc", (1, 0), "-")
    if form == 1:
        p = d.one("person")
        year = str(int(r.fact(p, "birth_year")) + rng.randint(11, 79))
        return f"How old was {p} in {year}?", Program((Hop(p, "birth_year"),), "calc", (year, 0), "-")
    if form == 2:
        a, b = d.two("city")
        text = f"How many people live in {a} and {b} together?"
        return text, Program((Hop(a, "population"), Hop(b, "population")), "calc", (0, 1), "+")
    if form == 3:
        o, wage = d.one("organisation"), str(rng.randint(3, 40))
        text = f"Each employee of {o} earns {wage} coins a day. How many coins does {o} pay its employees each day?"
        return text, Program((Hop(o, "employees"),), "calc", (0, wage), "*")
    if form == 4:
        a, b = sorted(d.two("person", "height"), key=lambda p: -int(r.fact(p, "height")))
        text = f"How many centimetres taller is {a} than {b}?"
        return text, Program((Hop(a, "height"), Hop(b, "height")), "calc", (0, 1), "-")
    p, boxes, per_box = d.one("person"), str(rng.randint(12, 99)), str(rng.randint(12, 99))
    text = f"{p} packs {boxes} boxes with {per_box} cups in each box. How many cups does {p} pack?"
    return text, Program((), "calc", (boxes, per_box), "*")


def _direct(d: _Draw) -> tuple[str, Program]:
    """A question the text itself answers: calling a tool would be a mistake."""
    rng = d.rng
    form = rng.randrange(3)
    if form == 0:
        name = d.one(rng.choice(("person", "city", "organisation")))
        return f"Repeat this name exactly: {name}", Program((), "direct", (name,))
    if form == 1:
        a, b = rng.sample(range(10, 1000), 2)
        return f"Which number is larger, {a} or {b}?", Program((), "direct", (str(max(a, b)),))
    words = rng.sample(HOBBIES + LANDMARKS + PRODUCTS, 3)
    return f"What is the last word of this list: {', '.join(words)}?", Program((), "direct", (words[-1],))


MAKERS: dict[str, Callable[[_Draw], tuple[str, Program]]] = {
    "bridge": _bridge, "comparison": _comparison, "yes_no": _yes_no, "arithmetic": _arithmetic, "direct": _direct,
}


def draw_questions(rng: random.Random, region: Region, kind: str, count: int) -> list[tuple[str, Program, list[str]]]:
    """Up to `count` distinct questions of `kind` (fewer only when the region is too small to have that many),
    each with the names of the entities its text mentions."""
    draw, made, seen = _Draw(rng, region), [], set()
    for _ in range(20 * count):
        if len(made) == count:
            break
        draw.picked = []
        try:
            item = MAKERS[kind](draw)
        except _Rejected:
            continue
        if item[0] not in seen:
            seen.add(item[0])
            made.append((*item, draw.picked))
    return made

