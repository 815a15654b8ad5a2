"""Whole training runs in-process (8 fake devices, fsdp=8): a tiny model memorises a tiny dataset, a diverging
run stops with its last good checkpoint kept, a finished run loads back for evaluation, and bad configs
fail up front with a ConfigError naming the key to change."""

from __future__ import annotations

import logging
import math
import re
import shutil

import numpy as np
import pytest
from flax import nnx
from train_support import abstract_like, base_config, flat_params, run_config, toy_files, write_config, write_toy_data

from agentjax.configlib import ConfigError, load
from agentjax.train.run_dir import load_trained_model
from agentjax.train.checkpoint import Checkpoints
from agentjax.train.config import RunConfig
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import Trainer, TrainingDiverged


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    data, tokenizer = toy_files()
    folder = tmp_path_factory.mktemp("run")
    return write_config(folder / "run.yaml", base_config(data, tokenizer, folder / "out"))


@pytest.fixture(scope="module")
def memorised(config_file, tmp_path_factory):
    """A run over 4 fixed conversations, 50 steps: (trainer, result)."""
    folder = tmp_path_factory.mktemp("memorise")
    data = write_toy_data(folder / "four.jsonl", 4)
    cfg = run_config(config_file, f"data.sources=[{{path: {data}, format: agentjax}}]", f"output_dir={folder / 'out'}",
                     "train.steps=50", "train.checkpoint_every=50", "train.log_every=10", "train.eval_every=10",
                     f"eval_data={{sources: [{{path: {data}, format: agentjax}}], seq_len: 64, pack_window: 32}}")
    trainer = Trainer(cfg)
    return trainer, trainer.run()


def test_a_tiny_model_memorises_a_tiny_dataset(memorised):
    """Four fixed conversations, 50 steps: the loss on their answers falls under 0.2 nats/token.

    Why 0.2: answers are random words, a fixed function of the question number. A model that has not
    memorised which answer goes with which question can at best predict the answer words' frequencies,
    about ln(12) = 2.5 nats/token on these 12 words; 0.2 means it gives the right token ~80% probability.
    """
    trainer, result = memorised
    losses = [r["loss"] for r in read_metrics(result.run_dir)]
    assert result.final_step == 50 and len(losses) == 5
    assert losses[0] > 3.0
    assert losses[-1] < 0.2, losses


def test_the_held_out_loss_is_logged_on_the_same_batches_each_time(memorised):
    """eval_data every 10 steps: the held-out loss (here on the memorised conversations themselves) is logged
    at steps 10..50 and falls with the training loss; evaluating again gives the last value exactly (the
    same batches every time, whatever the evaluation pipeline read before)."""
    trainer, result = memorised
    records = read_metrics(result.run_dir)
    held_out = [r["held_out_loss"] for r in records]
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50]
    assert held_out[-1] < 0.2 < held_out[0], held_out
    assert trainer.held_out_loss() == trainer.held_out_loss() == held_out[-1]


def test_a_finished_run_loads_back_as_its_final_model(memorised):
    """load_trained_model(run_dir) gives the trainer's final parameters, bit for bit, and the run's tokenizer."""
    trainer, result = memorised
    model, tokenizer = load_trained_model(result.run_dir)
    assert tokenizer.vocab_size == trainer.tokenizer.vocab_size == model.config.vocab_size
    loaded, trained = flat_params(nnx.to_pure_dict(nnx.state(model, nnx.Param))), flat_params(trainer.state.params)
    assert loaded.keys() == trained.keys()
    for name, value in trained.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(config_file, tmp_path):
    """An absurd learning rate makes the loss non-finite: the run raises TrainingDiverged naming the step and the
    checkpoint kept, every kept checkpoint holds finite parameters (and loads by its step), and no non-finite loss
    was logged."""
    cfg = run_config(config_file, f"output_dir={tmp_path}", "train.steps=30", "train.checkpoint_every=1",
                     "train.keep_checkpoints=2", "train.optimizer.learning_rate=1e30", "train.optimizer.clip_norm=null")
    trainer = Trainer(cfg)
    with pytest.raises(TrainingDiverged, match=r"at step (\d+): stopped. The last good checkpoint \(step (\d+)\)") as error:
        trainer.run()
    bad_step = int(error.value.args[0].split("at step ")[1].split(":")[0])
    checkpoints = Checkpoints(tmp_path, read_only=True)
    kept = checkpoints.manager.all_steps()
    assert kept and max(kept) < bad_step
    assert f"(step {max(kept)})" in str(error.value)
    for step in kept:
        params = checkpoints.restore_params(step, abstract_like(trainer.state.params))
        assert all(np.isfinite(v).all() for v in flat_params(params).values()), step
    # eval's run_step: any kept checkpoint loads by its step; one not kept is refused, naming those that are
    earliest = flat_params(checkpoints.restore_params(min(kept), abstract_like(trainer.state.params)))
    model, _ = load_trained_model(tmp_path, step=min(kept))
    loaded = flat_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    for name, value in earliest.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    with pytest.raises(FileNotFoundError, match=re.escape(f"no checkpoint of step {bad_step} (kept: {sorted(kept)})")):
        load_trained_model(tmp_path, step=bad_step)
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path))


@pytest.mark.parametrize("overrides, message", [
    (["mesh.data=2", "mesh.fsdp=2"], r"mesh: data\*fsdp\*tensor = 4 but there are 8 devices"),
    (["train.global_batch=6"], r"train.global_batch \(6\) must be divisible by mesh data\*fsdp \(8\)"),
    (["train.global_batch=8", "train.micro_batches=2"], r"train.global_batch \(8\) must be divisible .* train.micro_batches \(2\)"),
    (["data.seq_len=1024"], r"data.seq_len \(1024\) exceeds the model's max_seq_len \(512\)"),
    (["data.sources=[{path: /nonexistent/x.jsonl, format: agentjax}]"], r"data.sources\[0\].path: /nonexistent/x.jsonl does not exist"),
    (["data.sources=[{path: /nonexistent/*.jsonl, format: agentjax}]"], r"data: path: '/nonexistent/\*.jsonl' matches no file"),
    (["tokenizer.path=/nonexistent/tokenizer.model"], r"tokenizer.path: /nonexistent/tokenizer.model does not exist"),
    (["tokenizer.path=/"], r"tokenizer.path: / holds neither tokenizer.json nor tokenizer.model"),
    (["train.eval_every=5"], r"train.eval_every is set but eval_data is missing"),
    (["train.optimizer.learning_rate=-3e-4"], r"learning_rate: must be a finite number > 0, got -0.0003"),
    (["train.optimizer.learning_rate=.nan"], r"learning_rate: must be a finite number > 0, got nan"),
    (["train.optimizer.learning_rate=.inf"], r"learning_rate: must be a finite number > 0, got inf"),
    (["train.optimizer.learning_rate=0"], r"learning_rate: must be a finite number > 0, got 0"),
    (["train.optimizer.b2=1.0"], r"b2: must be in \[0, 1\), got 1.0"),
    (["train.optimizer.eps=0"], r"eps: must be a finite number > 0"),
    (["train.optimizer.weight_decay=-0.1"], r"weight_decay: must be a finite number >= 0"),
    (["train.optimizer.clip_norm=0"], r"clip_norm: must be a finite number > 0, or null"),
    (["train.optimizer.warmup_steps=-1"], r"warmup_steps: must be >= 0"),
    (["train.optimizer.min_lr_ratio=2"], r"min_lr_ratio: must be in \[0, 1\]"),
])
def test_bad_configs_fail_up_front_naming_the_key(config_file, tmp_path, overrides, message):
    """Each mistake is a ConfigError naming the key, raised before anything is written or compiled."""
    with pytest.raises(ConfigError, match=message):
        Trainer(run_config(config_file, f"output_dir={tmp_path / 'out'}", *overrides))
    assert not (tmp_path / "out").exists()


def test_a_template_the_tokenizer_cannot_serve_fails_before_the_run_is_made(config_file, tmp_path, tok):
    """A tokenizer without the control tokens its template needs (chatml over a sentencepiece model) is refused
    naming the tokenizer file and the token, before the run directory, its tokenizer copy or the model exist."""
    with pytest.raises(ConfigError, match=r"data.template: .*tok.*: template 'chatml' needs the special token '<\|im_start\|>'"):
        Trainer(run_config(config_file, f"output_dir={tmp_path / 'out'}", f"tokenizer.path={tok.source}",
                           "data.template=chatml"))
    assert not (tmp_path / "out").exists()


def test_item8_a_run_diverging_before_its_first_checkpoint_says_none_is_kept(config_file, tmp_path):
    """A learning rate that is valid but far too large diverges before the first checkpoint: the error says no
    checkpoint was saved (not "the last good checkpoint (step None)")."""
    cfg = run_config(config_file, f"output_dir={tmp_path}", "train.steps=30", "train.checkpoint_every=100",
                     "train.optimizer.learning_rate=1e30", "train.optimizer.clip_norm=null")
    with pytest.raises(TrainingDiverged, match=r"at step \d+: stopped. No checkpoint was saved before it.") as error:
        Trainer(cfg).run()
    assert "None" not in str(error.value)


@pytest.fixture
def finished_copy(memorised, tmp_path):
    """A copy of the memorised run's directory (finished at step 50), to resume without touching the original."""
    _, result = memorised
    copy = tmp_path / "run"
    shutil.copytree(result.run_dir, copy)
    return copy


def test_item3_a_refused_resume_leaves_the_run_record_byte_identical(finished_copy):
    """Resuming with another model shape is refused, and config.yaml is untouched, so the finished checkpoints
    still load back (for export and evaluation) as the model they are."""
    before = (finished_copy / "config.yaml").read_bytes()
    cfg = load(RunConfig, finished_copy / "config.yaml", [f"output_dir={finished_copy}", "model.overrides={mlp_dim: 64}",
                                                            "train.steps=60"])
    with pytest.raises(ConfigError, match=r"cannot resume from step 50, the checkpoint does not fit"):
        Trainer(cfg)
    assert (finished_copy / "config.yaml").read_bytes() == before
    model, _ = load_trained_model(finished_copy)
    assert model.config.mlp_dim == 128


def test_item4_a_torn_metrics_line_is_dropped_on_resume(finished_copy, caplog):
    """A metrics.jsonl whose last append was cut off (disk full, power loss) resumes: the torn line is reported
    and dropped, the log is exactly the first run's records plus the new steps'."""
    metrics = finished_copy / "metrics.jsonl"
    first = read_metrics(finished_copy)
    with metrics.open("a") as f:
        f.write('{"step": 60, "loss": 0.0')
    torn_line = len(first) + 1
    cfg = load(RunConfig, finished_copy / "config.yaml", [f"output_dir={finished_copy}", "train.steps=52"])
    with caplog.at_level(logging.WARNING):
        result = Trainer(cfg).run()
    assert result.final_step == 52
    assert f"metrics.jsonl:{torn_line}: not valid JSON" in caplog.text
    records = read_metrics(finished_copy)
    assert records[:-1] == first and records[-1]["step"] == 52
