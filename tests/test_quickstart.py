"""The default job: configs/quickstart.yaml is the built-in default, and the quickstart notebook (a reduced\nquickstart) learns to use tools."""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agentjax.configlib import load
from agentjax.quickstart import FAST, QuickstartConfig, format_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_quickstart_config_is_the_default():
    """configs/quickstart.yaml spells out exactly the defaults `agentjax quickstart` uses without --config."""
    assert load(QuickstartConfig, ROOT / "configs" / "quickstart.yaml") == QuickstartConfig()


@pytest.mark.slow
def test_quickstart_notebook_runs_and_its_agent_beats_the_untrained_one(tmp_path, monkeypatch):
    """colab/quickstart.ipynb executed top to bottom by nbclient on CPU in its fast mode (agentjax already
    installed, so its install cell installs nothing); the `--fast` quickstart it runs is the check of the
    default job, so CI pays for one reduced quickstart, not two.

    The untrained model is randomly initialised: it almost never writes a well-formed action, so its share of
    valid tool calls and its EM are ~0. Two minutes of fine-tuning teach the ReAct format and the tools (measured:
    99% valid calls) but not yet copying unseen names, so its EM comes mostly from yes/no questions (measured:
    5%). The thresholds sit well inside that gap: at least 80% valid calls, and at least one held-out question
    solved end to end (EM > before); either failing means the training, the renderer or the tool loop is broken.
    """
    notebook = nbformat.read(ROOT / "colab" / "quickstart.ipynb", as_version=4)
    # the kernel and the notebook's `!agentjax` run from this interpreter's environment and this checkout
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    out = tmp_path / "runs" / "quickstart-fast"
    summary = json.loads((out / "summary.json").read_text())
    print(format_table(summary))
    assert f"EM before fine-tuning: {summary['em_before']:.1f}" in printed  # the notebook read the run it made
    assert summary["em_before"] <= 2.5 and summary["valid_tool_calls"]["before"] <= 20
    assert summary["em_after"] > summary["em_before"]
    assert summary["valid_tool_calls"]["after"] >= 80
    assert summary["eval_questions"] == FAST["eval_questions"]
    for name in ("summary.json", "quickstart.png", "eval-before/transcripts.jsonl", "eval-after/transcripts.jsonl",
                 "train/metrics.jsonl", "data/train-react.jsonl"):
        assert (out / name).stat().st_size > 0, name
