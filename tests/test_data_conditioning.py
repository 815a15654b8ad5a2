"""NAT conditioning: labels by outcome (binary, or four levels by F1), prefix/suffix, and the inference prompt's parity."""

from __future__ import annotations

import pytest
from data_support import FIREACT, small_tokenizer

from agentjax.configlib import ConfigError, from_dict
from agentjax.data.conditioning import condition_for_inference, condition_on_outcome, outcome_label, question_turn_index
from agentjax.data.config import ConditioningConfig, SourceConfig
from agentjax.data.conversation import Outcome
from agentjax.util.errors import DataError
from agentjax.data.formats import read_conversations
from agentjax.data.sources import load_source
from agentjax.data.templates import TEMPLATES, get_template

BINARY = ConditioningConfig(mode="binary")
GRADED = ConditioningConfig(mode="graded", placement="suffix")


@pytest.fixture(scope="module")
def nat(shared_data):
    return list(read_conversations(shared_data / "fixtures/nat_sample.json", "nat"))


def test_question_turn_is_the_user_turn_before_the_first_trained_reply(nat):
    """NAT puts tool instructions and an untrained acknowledgement first; the question is turn 2."""
    assert [question_turn_index(c) for c in nat] == [2, 2]
    assert question_turn_index(nat[0].replace(turns=nat[0].turns[:3])) == 2  # the inference prompt picks the same turn


def test_binary_labels_only_the_question_turn(nat):
    """Positive and negative trajectories get different labels, in front of the question; other turns unchanged."""
    pos, neg = (condition_on_outcome(c, BINARY) for c in nat)
    assert pos.turns[2].content == f"{BINARY.positive} {nat[0].turns[2].content}"
    assert neg.turns[2].content == f"{BINARY.negative} {nat[1].turns[2].content}"
    assert pos.turns[:2] + pos.turns[3:] == nat[0].turns[:2] + nat[0].turns[3:]


@pytest.mark.parametrize("outcome, level", [
    (Outcome(f1=1.0), 0), (Outcome(f1=0.6, success=False), 1), (Outcome(f1=0.45), 1), (Outcome(f1=0.2), 2),
    (Outcome(f1=0.0), 3),
    (Outcome(success=True), 0), (Outcome(success=False), 3), (Outcome(), None)])
def test_graded_levels_follow_f1_then_success(outcome, level):
    """Four levels by F1 (>= 1, >= 0.4 as in NAT, > 0, 0); success/failure stand in when F1 is unknown; else none."""
    assert outcome_label(outcome, GRADED) == (None if level is None else GRADED.levels[level])


def test_suffix_placement_and_unknown_outcome_error(shared_data):
    """Suffix puts the label after the question; a trajectory without an outcome is an error naming file:line."""
    conv = next(iter(read_conversations(shared_data / FIREACT / "hotpotqa.jsonl", "fireact")))
    assert condition_on_outcome(conv, GRADED).turns[0].content == f"{conv.turns[0].content} [Correct]"
    unknown = conv.replace(outcome=Outcome())
    with pytest.raises(DataError, match=r"hotpotqa\.jsonl:1: conditioning mode 'graded' needs"):
        condition_on_outcome(unknown, GRADED)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_inference_prompt_is_the_prefix_of_a_positive_training_example(template_tokenizers, nat, name):
    """The inference prompt (best label) is a token prefix of the conditioned positive trajectory, never the negative's."""
    template = get_template(name, template_tokenizers[name])
    question = nat[0].replace(turns=nat[0].turns[:3])
    prompt = template.prompt(condition_for_inference(question, BINARY))
    failed = nat[0].replace(outcome=Outcome(success=False))  # same text, only the outcome differs
    for conv, matches in ((nat[0], True), (failed, False)):
        ids = list(template.encode(condition_on_outcome(conv, BINARY)).ids)
        assert (ids[: len(prompt)] == prompt) is matches


def test_config_checks_levels_and_labels():
    """Four distinct levels, ordered thresholds, distinct binary labels."""
    with pytest.raises(ConfigError, match="levels"):
        from_dict(ConditioningConfig, {"levels": ["a", "b"]})
    with pytest.raises(ConfigError, match="f1_thresholds"):
        from_dict(ConditioningConfig, {"f1_thresholds": [0.5, 1.0]})
    with pytest.raises(ConfigError, match="must differ"):
        from_dict(ConditioningConfig, {"positive": "x", "negative": "x"})


def test_a_source_can_declare_the_outcome_of_all_its_records(shared_data):
    """`outcome: failure` on a source (a file of negatives) labels every record a failure, whatever it says."""
    template = get_template("react", small_tokenizer(shared_data))
    path = str(shared_data / "fireact/finetune/gpt_format/hotpotqa.jsonl")
    declared = load_source(from_dict(SourceConfig, {"path": path, "format": "fireact", "outcome": "failure",
                                                    "limit": 20}), template, BINARY)
    as_read = load_source(from_dict(SourceConfig, {"path": path, "format": "fireact", "limit": 20}), template, BINARY)
    assert any(c.outcome.success for c in as_read.conversations)
    assert all(c.outcome.success is False for c in declared.conversations)
    assert all(c.turns[0].content.startswith(BINARY.negative) for c in declared.conversations)
