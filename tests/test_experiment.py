"""`agentjax experiment` end to end on a tiny model: variants train, play the held-out questions, and are reused."""

import json

import pytest

from agentjax.configlib import ConfigError, load
from agentjax.experiment import run_experiment

TINY = ["from_scratch=true", "template=react", "lora=null", "model_preset=tiny", "tokenizer_vocab=512", "seq_len=384", "steps=2", "warmup_steps=1", "eval_questions=4", "before_questions=4",
        "eval_batch=4", "max_steps=2", "max_new_tokens=16", "max_len=512", "world.eval_questions_per_kind=1",
        "world.train_questions_per_kind=10"]


@pytest.mark.slow
def test_mixing_experiment_runs_both_variants_then_reuses_them_and_refuses_another_config(tmp_path):
    """Both variants of 'mixing' train and play the same questions; the table, JSON and PNG are written; a rerun
    reuses each variant's result, and a rerun with a changed config is refused instead of mixing two setups."""
    from agentjax.quickstart import QuickstartConfig

    cfg = load(QuickstartConfig, None, TINY)
    results = run_experiment("mixing", cfg, tmp_path, progress=False)
    assert [r["variant"] for r in results] == ["react", "general-mix"]
    for r in results:
        assert 0 <= r["em"] <= 100 and r["held_out_chat_loss"] > 0 and "config" not in r
    written = json.loads((tmp_path / "mixing" / "results.json").read_text())
    assert written["results"] == results
    assert (tmp_path / "mixing" / "results.png").stat().st_size > 0

    assert run_experiment("mixing", cfg, tmp_path, progress=False) == results  # reused, not retrained
    with pytest.raises(ConfigError, match="another config"):
        run_experiment("mixing", load(QuickstartConfig, None, [*TINY, "steps=3"]), tmp_path, progress=False)
