"""The generated world's entities: invented names, their facts, and the one short document each has."""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from typing import Mapping

KINDS = ("country", "city", "organisation", "person")

# Each kind's document, one sentence per line; a search shows the first SEARCH_SENTENCES, the rest need lookup.
SENTENCES: dict[str, tuple[str, ...]] = {
    "person": (
        "{name} is a {occupation} born in {birth_city} in {birth_year}.",
        "{name} works for {employer}.",
        "{name} is {height} cm tall.",
        "{name} enjoys {hobby}.",
    ),
    "city": (
        "{name} is a city in {country}, founded in {founded}.",
        "{name} has {population} inhabitants.",
        "{name} is famous for its {landmark}.",
    ),
    "country": (
        "{name} is a country whose capital is {capital}.",
        "{name} was founded in {founded}.",
        "{name} has {population} inhabitants.",
    ),
    "organisation": (
        "{name} is based in {city} and was founded in {founded}.",
        "{name} is led by {leader}.",
        "{name} has {employees} employees.",
        "{name} is known for its {product}.",
    ),
}
SEARCH_SENTENCES = 2


@functools.cache
def _fact_template(kind: str, relation: str) -> tuple[str, str]:
    """The regex text of the sentence stating `relation`, split around the subject's name."""
    sentence = next(s for s in SENTENCES[kind] if "{" + relation + "}" in s)
    pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: "(?P<value>[^.,]+?)" if m.group(1) == relation
                     else "\x00" if m.group(1) == "name" else "[^.,]+?", re.escape(sentence))
    before, after = pattern.split("\x00")
    return before, after


def read_fact(text: str, kind: str, subject: str, relation: str) -> str | None:
    """The value of `relation` for `subject` if `text` (e.g. a tool's observation) states it; else None.

    The inverse of writing documents: it parses the same sentence templates.
    """
    before, after = _fact_template(kind, relation)
    match = re.search(before + re.escape(subject) + after, text)
    return match.group("value") if match else None


@dataclass(frozen=True)
class Relation:
    """A fact type: what it points to (an entity kind or "number"), how to ask for it and state it, a lookup word."""

    target: str
    ask: str
    state: str
    keyword: str


RELATIONS: dict[tuple[str, str], Relation] = {
    ("person", "birth_city"): Relation("city", "where {s} was born", "{s} was born in {v}", "born"),
    ("person", "birth_year"): Relation("number", "when {s} was born", "{s} was born in {v}", "born"),
    ("person", "employer"): Relation("organisation", "who {s} works for", "{s} works for {v}", "works"),
    ("person", "height"): Relation("number", "how tall {s} is", "{s} is {v} cm tall", "tall"),
    ("city", "country"): Relation("country", "which country {s} is in", "{s} is in {v}", "country"),
    ("city", "founded"): Relation("number", "when {s} was founded", "{s} was founded in {v}", "founded"),
    ("city", "population"): Relation("number", "how many inhabitants {s} has", "{s} has {v} inhabitants",
                                     "inhabitants"),
    ("country", "capital"): Relation("city", "the capital of {s}", "the capital of {s} is {v}", "capital"),
    ("country", "founded"): Relation("number", "when {s} was founded", "{s} was founded in {v}", "founded"),
    ("country", "population"): Relation("number", "how many inhabitants {s} has", "{s} has {v} inhabitants",
                                        "inhabitants"),
    ("organisation", "city"): Relation("city", "where {s} is based", "{s} is based in {v}", "based"),
    ("organisation", "founded"): Relation("number", "when {s} was founded", "{s} was founded in {v}", "founded"),
    ("organisation", "leader"): Relation("person", "who leads {s}", "{s} is led by {v}", "led"),
    ("organisation", "employees"): Relation("number", "how many employees {s} has", "{s} has {v} employees",
                                            "employees"),
}

OCCUPATIONS = ("painter", "farmer", "teacher", "sailor", "baker", "judge", "poet", "miner", "doctor", "weaver",
               "merchant", "builder")
HOBBIES = ("chess", "fishing", "singing", "climbing", "gardening", "rowing", "cooking", "dancing")
LANDMARKS = ("bridge", "harbour", "market", "tower", "library", "gardens", "castle", "fountain")
PRODUCTS = ("maps", "bells", "ships", "tea", "glass", "clocks", "paper", "rope")
ORG_SUFFIXES = ("Guild", "Bank", "Academy", "Company", "Society", "Press", "Foundry", "Institute")

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "st", "tr", "sh", "th")
_NUCLEI = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "k", "m")


def _template_words() -> frozenset[str]:
    """Every word the templates and word lists use: generated names must never coincide with one."""
    text = " ".join(s for sentences in SENTENCES.values() for s in sentences)
    text += " ".join(r.ask + " " + r.state for r in RELATIONS.values())
    text += " ".join(OCCUPATIONS + HOBBIES + LANDMARKS + PRODUCTS + ORG_SUFFIXES)
    return frozenset(w.lower() for w in re.findall(r"[A-Za-z]+", text))


class NameMaker:
    """Invents new words from syllables, never the same word twice and never a word of the templates."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set(_template_words())

    def word(self) -> str:
        """A fresh capitalised word of two or three syllables."""
        while True:
            syllables = 2 if self.rng.random() < 0.8 else 3
            word = "".join(
                self.rng.choice(_ONSETS) + self.rng.choice(_NUCLEI) + self.rng.choice(_CODAS) for _ in range(syllables)
            )
            if word not in self.used:
                self.used.add(word)
                return word.capitalize()

    def name(self, kind: str) -> str:
        """A fresh name for an entity of `kind`: "Word Word" people, "Wordia" countries, "Word Guild" organisations."""
        if kind == "person":
            return f"{self.word()} {self.word()}"
        if kind == "country":
            return self.word().rstrip("aeiou") + "ia"
        if kind == "organisation":
            return f"{self.word()} {self.rng.choice(ORG_SUFFIXES)}"
        return self.word()


@dataclass(frozen=True)
class Entity:
    """One invented thing: its unique name, kind, the split it belongs to, and its facts (relation -> value)."""

    name: str
    kind: str
    split: str
    facts: Mapping[str, str | int]

    def document(self) -> tuple[str, ...]:
        """The sentences of this entity's document."""
        return tuple(s.format(name=self.name, **self.facts) for s in SENTENCES[self.kind])


@dataclass(frozen=True)
class RegionSize:
    """How many entities of each kind one split's region holds."""

    countries: int
    cities: int
    organisations: int
    people: int


def make_region(rng: random.Random, names: NameMaker, split: str, size: RegionSize) -> list[Entity]:
    """A self-contained region: its people, places and organisations only refer to one another."""
    if size.cities < size.countries or size.people < size.organisations or min(size.countries, size.organisations) < 2:
        raise ValueError(f"region {split!r} too small to link its entities: {size}")
    countries = [names.name("country") for _ in range(size.countries)]
    cities = [names.name("city") for _ in range(size.cities)]
    orgs = [names.name("organisation") for _ in range(size.organisations)]
    people = [names.name("person") for _ in range(size.people)]
    # The first cities are the capitals, so every country has a city; likewise every organisation has an employee.
    city_country = {c: countries[i] if i < len(countries) else rng.choice(countries) for i, c in enumerate(cities)}
    employer = {p: orgs[i] if i < len(orgs) else rng.choice(orgs) for i, p in enumerate(people)}
    staff = {o: [p for p in people if employer[p] == o] for o in orgs}

    entities = [
        Entity(k, "country", split, {"capital": cities[i], "founded": rng.randint(1000, 1950),
                                     "population": rng.randint(1_000_000, 9_000_000)})
        for i, k in enumerate(countries)
    ]
    entities += [
        Entity(c, "city", split, {"country": city_country[c], "founded": rng.randint(800, 1800),
                                  "population": rng.randint(2_000, 900_000), "landmark": rng.choice(LANDMARKS)})
        for c in cities
    ]
    entities += [
        Entity(o, "organisation", split, {"city": rng.choice(cities), "founded": rng.randint(1500, 1990),
                                          "leader": rng.choice(staff[o]), "employees": rng.randint(20, 4_000),
                                          "product": rng.choice(PRODUCTS)})
        for o in orgs
    ]
    entities += [
        Entity(p, "person", split, {"occupation": rng.choice(OCCUPATIONS), "birth_city": rng.choice(cities),
                                    "birth_year": rng.randint(1800, 1990), "employer": employer[p],
                                    "height": rng.randint(150, 205), "hobby": rng.choice(HOBBIES)})
        for p in people
    ]
    return entities
