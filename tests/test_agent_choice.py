"""Multiple choice by likelihood: batching and padding change no pick, and accuracy counts the picks."""

import numpy as np
import pytest
from flax import nnx

from agentjax.agent.choice import choice_accuracy, choose, letter_ids, prompt_ids, spread
from agentjax.data.templates import get_template
from agentjax.model import Llama, preset
from agentjax.tasks.mmlu import LETTERS, MMLU


@pytest.fixture(scope="module")
def setup(shared_data, tok):
    model = Llama(preset("tiny", vocab_size=tok.vocab_size, dtype="float32"), rngs=nnx.Rngs(3))
    questions = spread(MMLU().load(shared_data / "fireact" / "mmlu", "test"), 8)
    return model, get_template("react", tok), questions


def test_each_pick_is_the_letter_an_unpadded_forward_ranks_first(setup):
    """Questions of different lengths, sorted, padded and batched with a partly filled last batch: every pick is
    the letter whose logit is largest at the prompt's last token when that prompt runs alone, unpadded."""
    model, template, questions = setup
    ids = letter_ids(template)
    alone = [LETTERS[int(np.argmax(np.asarray(model(np.asarray([prompt_ids(template, q)])))[0, -1, ids]))]
             for q in questions]
    assert len({len(prompt_ids(template, q)) for q in questions}) > 1
    assert choose(model, template, questions, batch_size=5, progress=False) == alone


def test_accuracy_counts_picks_equal_to_the_gold_letter(setup):
    """Overall and per-subject accuracy are the shares of questions whose pick is the gold letter."""
    model, template, questions = setup
    picks = choose(model, template, questions, batch_size=4, progress=False)
    result = choice_accuracy(model, template, questions, batch_size=4, progress=False)
    assert result["n"] == len(questions)
    assert result["accuracy"] == pytest.approx(100 * np.mean([p == q.answers[0] for p, q in zip(picks, questions)]))
    subjects = {q.meta["subject"] for q in questions}
    assert set(result["per_subject"]) == subjects and len(subjects) > 4  # spread reaches many subjects


def test_spread_takes_evenly_spaced_questions():
    """n of N questions at indices i*N//n: in order, distinct, first included, all when n >= N."""
    items = list(range(100))
    assert spread(items, 4) == [0, 25, 50, 75] and spread(items, None) == items and spread(items, 200) == items
