"""Scoring: SQuAD normalisation, EM, HotpotQA-style F1, yes/no, letter and numeric matching, unfinished = 0."""

from fractions import Fraction

import pytest

from agentjax.agent.registry import get_task
from agentjax.tasks import Question
from agentjax.tasks.scoring import (
    choice_letter,
    exact_match,
    f1_score,
    letter_match,
    normalize_answer,
    numeric_match,
    parse_number,
    yes_no_match,
)


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("an Apple, a day", "apple day"),
        ("Washington, D.C.", "washington dc"),
        ("House of Habsburg-Lorraine", "house of habsburglorraine"),  # hyphens are punctuation, as in SQuAD
        ("theatre anthem", "theatre anthem"),  # articles only as whole words
        ("  \tA\n", ""),
    ],
)
def test_normalize_answer(raw, normalized):
    """Lowercase, punctuation and a/an/the removed, whitespace folded."""
    assert normalize_answer(raw) == normalized


def test_exact_match_and_f1():
    """EM compares normalised strings; F1 is token overlap of the normalised strings."""
    assert exact_match("The Beatles", "beatles") == 1.0
    assert exact_match("Beatles band", "beatles") == 0.0
    assert f1_score("Beatles band", "the beatles") == pytest.approx(2 / 3)  # p = 1/2, r = 1
    assert f1_score("Seth MacFarlane", "seth macfarlane") == 1.0
    assert f1_score("new york city", "york") == pytest.approx(0.5)
    assert f1_score("", "york") == 0.0


@pytest.mark.parametrize("pred, gold", [("yes", "no"), ("no", "yes"), ("yes it is", "yes"), ("yes", "yes indeed"),
                                        ("noanswer", "no answer given")])
def test_f1_yes_no_rule(pred, gold):
    """As in HotpotQA's official script, yes/no/noanswer get no partial credit: unequal means F1 = 0."""
    assert f1_score(pred, gold) == 0.0


@pytest.mark.parametrize(
    "pred, gold, expected",
    [("Yes.", "yes", 1.0), ("No, because it is too far.", "no", 1.0), ("not really", "no", 0.0),
     ("nope", "no", 0.0), ("", "yes", 0.0), ("yes", "no", 0.0)],
)
def test_yes_no_match(pred, gold, expected):
    """The prediction's first word must be the gold yes/no ("not" does not start with "no")."""
    assert yes_no_match(pred, gold) == expected


@pytest.mark.parametrize(
    "pred, letter",
    [("B", "B"), ("B. paralysis", "B"), ("(C) text", "C"), ("[d]", "D"), (" a ", "A"), ("b.", "B"),
     ("Because of A", None), ("a protruding mandible", None), ("", None)],
)
def test_choice_letter(pred, letter):
    """An option letter starts the answer; a lowercase word like "a protruding..." is not option A."""
    assert choice_letter(pred) == letter
    assert letter_match(pred, "B") == float(letter == "B")


@pytest.mark.parametrize(
    "text, number",
    [("72", Fraction(72)), ("$1,234.50", Fraction("1234.5")), ("The answer is 18 dollars.", Fraction(18)),
     ("from 3 to 5", Fraction(5)), ("-4", Fraction(-4)), ("2/3", Fraction(2, 3)), ("none", None)],
)
def test_parse_number(text, number):
    """The last number in the text, exactly (thousands separators, units and fractions handled)."""
    assert parse_number(text) == number


def test_numeric_match():
    """Numbers are compared exactly, whatever their formatting."""
    assert numeric_match("18.00", "18") == 1.0
    assert numeric_match("1,000", "1000") == 1.0
    assert numeric_match("0.5", "1/2") == 1.0
    assert numeric_match("17", "18") == 0.0
    assert numeric_match("eighteen", "18") == 0.0


@pytest.mark.parametrize(
    "task, gold, right, wrong",
    [("hotpotqa", "Chief of Protocol", "chief of protocol", "protocol officer"),
     ("bamboogle", "james madison", "James Madison.", "Madison"),
     ("strategyqa", "no", "No.", "yes"),
     ("mmlu", "C", "C. 37°C", "D"),
     ("gsm8k", "72", "$72", "71")],
)
def test_task_scores_and_unfinished_episode(task, gold, right, wrong):
    """Each task scores a right answer 1 on its primary metric, a wrong one below 1, and None 0 on every metric."""
    t = get_task(task)
    q = Question(id="1", question="?", answers=(gold,))
    assert t.score(right, q)[t.metrics[0]] == 1.0
    assert t.score(wrong, q)[t.metrics[0]] == 0.0
    assert t.score(None, q) == {m: 0.0 for m in t.metrics}
    assert set(t.score(right, q)) == set(t.metrics)


def test_several_gold_answers_take_the_best():
    """With several gold answers each metric is its maximum over them."""
    task = get_task("hotpotqa")
    q = Question(id="1", question="?", answers=("New York City", "NYC"))
    assert task.score("nyc", q) == {"em": 1.0, "f1": 1.0}
    assert task.score("new york", q)["f1"] == pytest.approx(0.8)


def test_aggregate_is_the_mean():
    """A run's score is the mean over episodes, unfinished ones included as 0."""
    task = get_task("hotpotqa")
    q = Question(id="1", question="?", answers=("Paris",))
    scores = [task.score("Paris", q), task.score(None, q), task.score("Paris, France", q), task.score("Rome", q)]
    assert task.aggregate(scores) == pytest.approx({"em": 0.25, "f1": (1 + 0 + 2 / 3 + 0) / 4})
