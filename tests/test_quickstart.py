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

    The untrained model is randomly initialised: it almost never writes a well-formed action, so its share of
    valid tool calls and its EM are ~0. Two minutes of fine-tuning teach the ReAct format and the tools (measured:
    99% valid calls) but not yet copying unseen names, so its EM comes mostly from yes/no questions (measured:
    5%). The thresholds sit well inside that gap: at least 80% valid calls, and at least one held-out question
    solved end to end (EM > before); either failing means the training, the renderer or the tool loop is broken.
    """
    cfg = load(QuickstartConfig, None, [f"{k}={json.dumps(v)}" for k, v in _flatten(FAST).items()])
    summary = run_quickstart(cfg, tmp_path, progress=False)
    print(format_table(summary))
    assert summary["em_before"] <= 2.5 and summary["valid_tool_calls"]["before"] <= 20
    assert summary["em_after"] > summary["em_before"]
    assert summary["valid_tool_calls"]["after"] >= 80
    assert summary["eval_questions"] == FAST["eval_questions"]
    for name in ("summary.json", "quickstart.png", "eval-before/transcripts.jsonl", "eval-after/transcripts.jsonl",
                 "train/metrics.jsonl", "data/train-react.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "summary.json").read_text())["em_after"] == summary["em_after"]
