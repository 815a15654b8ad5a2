"""Answer scoring shared by every task and by `agentjax score`: SQuAD-normalised EM/F1, yes/no, letter, numeric."""

from __future__ import annotations

import re
import string
from collections import Counter
from fractions import Fraction
from typing import Callable, Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_F1_EXACT_ONLY = ("yes", "no", "noanswer")  # HotpotQA's official F1 gives these no partial credit
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_LETTER = re.compile(r"\s*[(\[]?(?:([A-Z])(?![A-Za-z])|([a-z])[)\].]?\s*$)")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and the articles a/an/the, fold whitespace."""
    s = s.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(gold))


def f1_score(pred: str, gold: str) -> float:
    """Token-level F1 of the normalised strings; yes/no/noanswer must match exactly (HotpotQA's rule)."""
    pred_norm, gold_norm = normalize_answer(pred), normalize_answer(gold)
    if (pred_norm in _F1_EXACT_ONLY or gold_norm in _F1_EXACT_ONLY) and pred_norm != gold_norm:
        return 0.0
    pred_tokens, gold_tokens = pred_norm.split(), gold_norm.split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def yes_no_match(pred: str, gold: str) -> float:
    """1.0 when the prediction's first word is the gold yes/no ("No, because..." counts; "not" does not)."""
    words = normalize_answer(pred).split()
    return float(bool(words) and words[0] == normalize_answer(gold))


def choice_letter(text: str) -> str | None:
    """The option letter a prediction starts with: "B", "(B) text", "B. text", or a lone "b"; else None."""
    m = _LETTER.match(text)
    if m is None:
        return None
    return (m.group(1) or m.group(2)).upper()


def letter_match(pred: str, gold: str) -> float:
    """1.0 when the prediction starts with the gold option letter."""
    return float(choice_letter(pred) == gold.strip().upper())


def parse_number(text: str) -> Fraction | None:
    """The last number in `text` as an exact Fraction ("1,234.50", "$18", "2/3", "-4"); None if there is none."""
    found = _NUMBER.findall(text.replace(",", ""))
    if not found:
        return None
    try:
        return Fraction(found[-1])
    except ZeroDivisionError:
        return None


def numeric_match(pred: str, gold: str) -> float:
    """1.0 when the last numbers of prediction and gold are equal as exact numbers (18 == 18.00)."""
    p, g = parse_number(pred), parse_number(gold)
    return float(p is not None and p == g)


def best_over(metric: Callable[[str, str], float], pred: str, golds: Iterable[str]) -> float:
    """The metric against the best of several gold answers."""
    return max((metric(pred, g) for g in golds), default=0.0)
