"""Sharded training on 8 fake devices: a data x fsdp x tensor = 2x2x2 mesh really shards parameters and Adam moments;
its checkpoint restores onto fsdp=8 with equal values and training continues; and two processes on 127.0.0.1
(4 devices each, the same 2x2x2 mesh, each reading its own rows) log the single-process run's losses."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from train_support import (abstract_like, agentjax_command, base_config, flat_params, run_config, run_two_processes,
                           toy_files, write_config)

from agentjax.train.checkpoint import Checkpoints
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import Trainer

MESH_2X2X2 = ("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    data, tokenizer = toy_files()
    folder = tmp_path_factory.mktemp("sharded")
    config = base_config(data, tokenizer, folder / "mesh")
    config["train"].update(steps=6, checkpoint_every=3)
    return write_config(folder / "run.yaml", config)


@pytest.fixture(scope="module")
def mesh_run(config_file):
    """6 steps on the 2x2x2 mesh: (trainer, losses by step, final state on host)."""
    trainer = Trainer(run_config(config_file, *MESH_2X2X2))
    result = trainer.run()
    return trainer, {r["step"]: r["loss"] for r in read_metrics(result.run_dir)}, flat_params(trainer.state._asdict())


def spec(array) -> tuple:
    """The array's PartitionSpec without trailing unsharded dims."""
    parts = list(array.sharding.spec)
    while parts and parts[-1] is None:
        parts.pop()
    return tuple(parts)


def test_a_2x2x2_mesh_trains_with_sharded_parameters_and_moments(mesh_run):
    """Kernels split over fsdp and tensor (each device holds a quarter), each Adam moment sharded like its
    parameter, and the loss goes down."""
    trainer, losses, _ = mesh_run
    q = trainer.state.params["layers"]["attn"]["q_proj"]["kernel"]  # [layers, embed, heads, head_dim]
    assert spec(q) == (None, "fsdp", "tensor")
    assert q.addressable_shards[0].data.size == q.size // 4
    adam = trainer.state.opt_state[1][0]
    for moments in (adam.mu, adam.nu):
        for param, moment in zip(jax.tree.leaves(trainer.state.params), jax.tree.leaves(moments)):
            assert moment.sharding.is_equivalent_to(param.sharding, param.ndim)
    assert list(losses) == list(range(1, 7)) and losses[6] < losses[1]


def test_the_checkpoint_restores_onto_another_mesh_and_training_continues(mesh_run, config_file):
    """A new run on fsdp=8 in the same directory resumes at step 6 with every state array equal to the
    2x2x2 run's (now sharded 8 ways), then trains on to step 9."""
    first, losses, saved = mesh_run
    trainer = Trainer(run_config(config_file, "mesh.fsdp=8", "train.steps=9"))
    assert trainer.start_step == 6
    q = trainer.state.params["layers"]["attn"]["q_proj"]["kernel"]
    assert spec(q) == (None, "fsdp") and q.addressable_shards[0].data.size == q.size // 8
    restored = flat_params(trainer.state._asdict())
    assert restored.keys() == saved.keys()
    for name, value in saved.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)
    result = trainer.run()
    logged = {r["step"]: r["loss"] for r in read_metrics(result.run_dir)}
    assert result.final_step == 9 and list(logged) == list(range(1, 10))
    assert all(logged[s] == losses[s] for s in losses)  # the log up to the resume point is kept as it was
    assert all(np.isfinite(logged[s]) for s in (7, 8, 9))


@pytest.mark.slow
@pytest.mark.multihost
def test_two_processes_on_loopback_equal_one_process(mesh_run, config_file, tmp_path):
    """`agentjax train` as 2 processes x 4 CPU devices (jax.distributed on 127.0.0.1, gloo collectives), each
    reading its half of every global batch: the same losses (rtol 1e-5) and final parameters (atol 1e-6)
    as the one-process run on the same 2x2x2 mesh."""
    trainer, losses, _ = mesh_run
    command = agentjax_command("train", "--config", str(config_file), f"output_dir={tmp_path / 'run'}", *MESH_2X2X2)
    logs = run_two_processes(command, tmp_path, devices=4)
    assert "process 1 of 2, 4 local / 8 global devices" in logs[1].read_text()
    logged = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "run")}
    assert list(logged) == list(losses)
    np.testing.assert_allclose([logged[s] for s in losses], list(losses.values()), rtol=1e-5)
    final = flat_params(Checkpoints(tmp_path / "run", read_only=True).restore_params(6, abstract_like(trainer.state.params)))
    for name, value in flat_params(trainer.state.params).items():
        np.testing.assert_allclose(final[name], value, atol=1e-6, err_msg=name)
