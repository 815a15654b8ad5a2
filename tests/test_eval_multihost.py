"""Evaluation on 2 processes (jax.distributed on 127.0.0.1) == evaluation on one, resuming a torn transcripts file."""

import dataclasses
import json
import shutil

import pytest
import yaml

from agentjax.agent.config import EvalConfig
from agentjax.agent.evaluate import CONFIG_RECORD, SUMMARY, TRANSCRIPTS, evaluate
from agentjax.configlib import load
from agentjax.data.templates import template_markers
from agentjax.data.tokenizer import train_sentencepiece
from agentjax.world.build import WorldConfig, build_world
from agentjax.world.task import WorldTask
from train_support import agentjax_command, run_two_processes

SMALL_WORLD = WorldConfig(countries=4, cities=8, organisations=6, people=24, eval_questions_per_kind=6,
                          train_questions_per_kind=6)
TIMING = "seconds"  # of the episode and of each tool call: the only fields that depend on the machine, not the model


def _config_file(tmp_path):
    questions = WorldTask(build_world(SMALL_WORLD)).load(split="test")
    train_sentencepiece([q.question for q in questions] * 20, 512, tmp_path / "tok.model",
                        user_symbols=template_markers())
    config = dict(model={"preset": "tiny"}, tokenizer=str(tmp_path / "tok.model"), task="world", split="test",
                  limit=12, task_options=dataclasses.asdict(SMALL_WORLD), max_steps=2, mesh={"num_devices": 1},
                  generation=dict(batch_size=1, max_len=256, max_new_tokens=12, buckets=[16, 64, 256]))
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_timing(record):
    calls = [{k: v for k, v in c.items() if k != TIMING} for c in record["tool_calls"]]
    return {**{k: v for k, v in record.items() if k != TIMING}, "tool_calls": calls}


@pytest.mark.slow
@pytest.mark.multihost
def test_two_processes_play_every_question_once_and_equal_one_process(tmp_path):
    """2 processes x 1 CPU device resume a transcripts file holding 3 finished episodes and a torn line: the 9
    others are split between them (2 rounds), process 0 writes one file, and every episode equals the 1-process
    evaluation's (greedy), none missing or duplicated; the 3 finished ones are kept as they were."""
    config_file = _config_file(tmp_path)
    one = tmp_path / "one"
    evaluate(load(EvalConfig, config_file, [f"output_dir={one}"]), progress=False)
    reference = {r["id"]: r for r in _lines(one / TRANSCRIPTS)}
    assert len(reference) == 12

    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(one / CONFIG_RECORD, two / CONFIG_RECORD)
    lines = (one / TRANSCRIPTS).read_text().splitlines()
    (two / TRANSCRIPTS).write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    command = agentjax_command("eval", "--config", str(config_file), f"output_dir={two}")
    run_two_processes(command, tmp_path, devices=1)

    records = _lines(two / TRANSCRIPTS)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 12 and set(ids) == set(reference)
    assert records[:3] == [json.loads(line) for line in lines[:3]]  # finished episodes were not redone
    for record in records:
        assert _without_timing(record) == _without_timing(reference[record["id"]]), record["id"]
    summary = json.loads((two / SUMMARY).read_text())
    assert summary["n"] == 12 and summary["episodes_this_run"] == 9 and summary["processes"] == 2
    assert sorted(p.name for p in two.iterdir()) == sorted([CONFIG_RECORD, SUMMARY, TRANSCRIPTS])
