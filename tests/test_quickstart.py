"""The default job: configs/quickstart.yaml is the built-in default, and a reduced quickstart learns to use tools."""

import json
from pathlib import Path

import pytest

from agentjax.configlib import load
from agentjax.quickstart import FAST, QuickstartConfig, _flatten, format_table, run_quickstart

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_quickstart_config_is_the_default():
    """configs/quickstart.yaml spells out exactly the defaults `agentjax quickstart` uses without --config."""
    assert load(QuickstartConfig, ROOT / "configs" / "quickstart.yaml") == QuickstartConfig()


@pytest.mark.slow
def test_reduced_quickstart_fine_tunes_an_agent_that_beats_the_untrained_one(tmp_path):
    """End to end on CPU (the --fast mode): the fine-tuned agent's held-out EM is above the untrained agent's.

    The untrained model is randomly initialised, so it essentially never writes a well-formed finish[answer]:
    its EM must be ~0. After fine-tuning it must get at least 10% EM: a fifth of the questions are yes/no, so
    an agent that has only learned the format and guesses already reaches ~10%; anything below means the
    training or the tool loop is broken. The full run (`agentjax quickstart`) gets far more (README).
    """
    cfg = load(QuickstartConfig, None, [f"{k}={json.dumps(v)}" for k, v in _flatten(FAST).items()])
    summary = run_quickstart(cfg, tmp_path, progress=False)
    print(format_table(summary))
    assert summary["em_before"] <= 2.5
    assert summary["em_after"] >= 10.0 and summary["em_after"] > summary["em_before"]
    assert summary["eval_questions"] == FAST["eval_questions"]
    for name in ("summary.json", "quickstart.png", "eval-before/transcripts.jsonl", "eval-after/transcripts.jsonl",
                 "train/metrics.jsonl", "data/train-react.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "summary.json").read_text())["em_after"] == summary["em_after"]
