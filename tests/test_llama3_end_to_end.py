"""A Llama-3-style model end to end: a tiny random model with a test-written Llama-3 tokenizer.json (template auto ->
llama3) trains 2 steps and plays 2 world episodes through the agent loop."""

from __future__ import annotations

import json
import math

import pytest
import train_support  # noqa: F401 (shares the XLA compilation cache with the other training tests)
from tokenizer_support import llama3_style_tokenizer, write_tokenizer_dir

from agentjax.agent.config import EvalConfig
from agentjax.agent.evaluate import TRANSCRIPTS, evaluate
from agentjax.configlib import from_dict, to_dict
from agentjax.data.native import write_conversations
from agentjax.data.templates import Llama3Template, get_template
from agentjax.train.config import RunConfig
from agentjax.train.run_dir import load_trained_model, read_run_config
from agentjax.train.trainer import train
from agentjax.world.build import WorldConfig, build_world
from agentjax.world.teacher import generate_trajectories

WORLD = WorldConfig(countries=4, cities=8, organisations=6, people=24, eval_questions_per_kind=2, train_questions_per_kind=4)


@pytest.mark.slow
def test_tiny_llama3_style_model_trains_and_evaluates_world_episodes(tmp_path):
    """Training copies tokenizer.json + tokenizer_config.json into the run and renders with llama3 (found by auto:
    <|begin_of_text|> once, <|eot_id|> after each reply, no sentencepiece file anywhere); 2 steps give finite
    losses; the trained run then plays 2 held-out world episodes to an end, transcripts written."""
    world = build_world(WORLD)
    trajectories = generate_trajectories(world, "train", ["react"])
    data = tmp_path / "train.jsonl"
    write_conversations(data, trajectories)
    texts = [t.content for c in trajectories for t in c.turns]
    tokenizer_dir = write_tokenizer_dir(tmp_path / "llama3-tokenizer", *llama3_style_tokenizer(texts, vocab_size=512))

    run = tmp_path / "run"
    result = train(from_dict(RunConfig, dict(
        model={"preset": "tiny"}, tokenizer={"path": str(tokenizer_dir)},
        data={"sources": [{"path": str(data), "format": "agentjax"}], "template": "auto", "seq_len": 256, "pack_window": 16},
        mesh={"num_devices": 1}, output_dir=str(run),
        train={"steps": 2, "global_batch": 4, "log_every": 1, "checkpoint_every": 2,
               "optimizer": {"learning_rate": 1e-3, "schedule": "constant"}},
    )))
    assert result.final_step == 2 and math.isfinite(result.last_loss)
    assert sorted(p.name for p in run.glob("tokenizer*")) == ["tokenizer.json", "tokenizer_config.json"]

    model, tokenizer = load_trained_model(run)
    template = get_template(read_run_config(run).data.template, tokenizer)
    assert isinstance(template, Llama3Template)
    ids = list(template.encode(trajectories[0]).ids)
    assert ids[0] == tokenizer.bos_id == tokenizer.special_id("<|begin_of_text|>") and tokenizer.bos_id not in ids[1:]
    assert ids.count(template.eot_id) == len(trajectories[0].turns) and tokenizer.vocab_size == model.config.vocab_size

    summary = evaluate(from_dict(EvalConfig, dict(
        run=str(run), task="world", task_options=to_dict(WORLD), split="test", limit=2, max_steps=2,
        output_dir=str(tmp_path / "eval"), mesh={"num_devices": 1},
        generation={"batch_size": 2, "max_len": 512, "max_new_tokens": 16, "buckets": [64, 256]})), progress=False)
    records = [json.loads(line) for line in (tmp_path / "eval" / TRANSCRIPTS).read_text().splitlines()]
    assert summary["n"] == 2 and len(records) == 2
    assert all(r["status"] in ("finished", "max_steps", "context_limit") and r["steps"] >= 1 for r in records)
    assert all(r["turns"][-1]["role"] in ("assistant", "tool") and r["context_tokens"] > 0 for r in records)
