"""General chat that needs no tools (AgentTuning's general-data share, at toy scale): small requests, right replies."""

from __future__ import annotations

import random

from agentjax.world.entities import HOBBIES, LANDMARKS, OCCUPATIONS, PRODUCTS

_WORDS = HOBBIES + LANDMARKS + OCCUPATIONS + PRODUCTS


def general_exchange(rng: random.Random) -> tuple[str, str]:
    """One request and its correct reply, e.g. sorting numbers, counting, reversing or spelling words."""
    form = rng.randrange(6)
    if form == 0:
        start = rng.randint(1, 20)
        end = start + rng.randint(2, 6)
        return f"Count from {start} to {end}.", ", ".join(str(n) for n in range(start, end + 1)) + "."
    if form == 1:
        numbers = rng.sample(range(1, 100), rng.randint(3, 5))
        listed = ", ".join(map(str, numbers))
        return f"Sort these numbers from smallest to largest: {listed}.", ", ".join(map(str, sorted(numbers))) + "."
    if form == 2:
        words = rng.sample(_WORDS, rng.randint(3, 4))
        return f"Reverse the order of these words: {' '.join(words)}.", " ".join(reversed(words)) + "."
    if form == 3:
        word = rng.choice(_WORDS)
        return f"Write the word {word} in capital letters.", word.upper() + "."
    if form == 4:
        word = rng.choice(_WORDS)
        return f"How many letters does the word {word} have?", f"The word {word} has {len(word)} letters."
    a, b = rng.sample(_WORDS, 2)
    return f"Which word comes first in alphabetical order, {a} or {b}?", f"{min(a, b).capitalize()} comes first."


def general_chat(rng: random.Random) -> list[tuple[str, str]]:
    """A short conversation: one or two exchanges, sometimes closed with thanks."""
    exchanges = [general_exchange(rng) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.3:
        exchanges.append(("Thank you!", "You are welcome."))
    return exchanges
