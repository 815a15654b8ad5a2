"""`agentjax experiment` end to end on a tiny model: variants train over seeds, play the held-out questions, add
the experiment's own measures (MMLU, tool hallucination), and are reused."""

import json

import pytest

from agentjax.configlib import ConfigError, load
from agentjax.experiment import MMLUSettings, aggregate, format_table, run_experiment

TINY = ["from_scratch=true", "frozen_layers=0", "template=react", "lora=null", "model_preset=tiny", "tokenizer_vocab=512",
        "seq_len=384", "steps=2", "warmup_steps=1", "eval_questions=4", "before_questions=4", "eval_batch=4", "max_steps=2",
        "max_new_tokens=16", "max_len=512", "world.eval_questions_per_kind=1", "world.train_questions_per_kind=10"]


@pytest.mark.slow
def test_mixing_experiment_measures_mmlu_then_reuses_its_variants_and_refuses_another_config(tmp_path,
                                                                                           shared_data):
    """The three 'mixing' variants train and play the same questions; each gets a held-out chat loss and an MMLU
    accuracy on the same questions as the untouched base; the table, JSON and PNG are written; a rerun reuses
    every variant's result, and a rerun with a changed config is refused instead of mixing two setups."""
    from agentjax.quickstart import QuickstartConfig

    cfg, mmlu = load(QuickstartConfig, None, TINY), MMLUSettings(str(shared_data / "fireact" / "mmlu"), 6)
    rows = run_experiment("mixing", cfg, tmp_path, progress=False, seeds=1, mmlu=mmlu)
    assert [r["variant"] for r in rows] == ["react", "general-0.2", "general-0.5"]
    for r in rows:
        assert 0 <= r["em"] <= 100 and r["held_out_chat_loss"] > 0 and 0 <= r["mmlu"] <= 100 and r["seeds"] == [0]
    written = json.loads((tmp_path / "mixing" / "results.json").read_text())
    assert written["results"] == rows and 0 <= written["base_mmlu"] <= 100
    assert json.loads((tmp_path / "base-mmlu.json").read_text())["n"] == 6
    assert (tmp_path / "mixing" / "results.png").stat().st_size > 0
    assert "MMLU" in format_table(rows, {"base_mmlu": written["base_mmlu"]})

    assert run_experiment("mixing", cfg, tmp_path, progress=False, seeds=1, mmlu=mmlu) == rows  # reused
    with pytest.raises(ConfigError, match="another config"):
        run_experiment("mixing", load(QuickstartConfig, None, [*TINY, "steps=3"]), tmp_path, progress=False, seeds=1,
                       mmlu=mmlu)


@pytest.mark.slow
def test_agentflan_experiment_runs_each_variant_per_seed_and_rates_tool_hallucination(tmp_path):
    """ReAct and chat-format variants each train at two seeds (two runs, two checkpoints) and get hallucination
    rates from the world's no-tool and missing-tool episodes; the chat variant is played in its own format."""
    from agentjax.quickstart import QuickstartConfig

    rows = run_experiment("agentflan", load(QuickstartConfig, None, TINY), tmp_path, progress=False, seeds=2)
    assert [(r["variant"], r["seeds"]) for r in rows] == [("react", [0, 1]), ("agentflan", [0, 1])]
    for r in rows:
        assert all(0 <= r[f"hallucination_{k}"] <= 100 for k in ("all", "direct", "request", "missing_tool"))
        for seed in (0, 1):
            where = tmp_path / "variants" / r["variant"] / f"seed{seed}"
            assert (where / "train" / "metrics.jsonl").exists() and (where / "eval-hallucination").is_dir()
    chat = json.loads((tmp_path / "variants" / "agentflan" / "seed0" / "eval" / "eval_config.json").read_text())
    assert chat["reply_without_action"] == "answer" and "{tools}" in chat["system_prompt"]


def test_aggregate_gives_means_and_sample_standard_deviations_over_seeds():
    """Each number of a variant's runs becomes its mean and sample std; per-kind EM is averaged; minutes add up."""
    runs = [dict(variant="v", label="V", seed=s, em=em, f1=em, per_kind={"a": em}, valid_tool_calls=100.0,
                 steps_per_episode=2.0, held_out_chat_loss=None, minutes=1.5, hallucination={"all": h})
            for s, em, h in ((0, 40.0, 10.0), (1, 50.0, 20.0), (2, 60.0, 30.0))]
    row = aggregate(runs)
    assert row["seeds"] == [0, 1, 2] and row["em"] == 50.0 and row["em_std"] == pytest.approx(10.0)
    assert row["hallucination_all"] == 20.0 and row["per_kind"] == {"a": 50.0} and row["minutes"] == 4.5
    assert "held_out_chat_loss" not in row and aggregate(runs[:1])["em_std"] == 0.0
