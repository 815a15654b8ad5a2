"""Contract 5, with real processes: `agentjax train` killed with SIGKILL, then stopped with SIGTERM, then run to the end
gives the losses and final parameters of an uninterrupted run, and never resumes from a half-written checkpoint.

One interrupted history serves the three tests: run 1 is killed (-9) once a checkpoint exists; a half-written
checkpoint with a later step is planted; run 2 resumes and gets SIGTERM after its first new checkpoint;
run 3 resumes and finishes. The uninterrupted reference runs in this process (same 8 devices, same program).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from train_support import (abstract_like, agentjax_command, flat_params, interruptible_config, run_config, start,
                           subprocess_env)

from agentjax.train.checkpoint import Checkpoints
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import Trainer

STEPS = 40
PLANTED = STEPS - 2  # the step of the half-written checkpoint
pytestmark = pytest.mark.slow


def finished_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints (orbax renames `<step>.orbax-checkpoint-tmp*` to `<step>` when done)."""
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, after: int, log: Path, timeout: float = 240) -> int:
    """Poll (every 20 ms) until a complete checkpoint with step > `after` exists; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [s for s in finished_steps(run_dir) if after < s < PLANTED]
        if steps:
            return steps[-1]
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before a checkpoint after step {after}:\n{log.read_text()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no checkpoint after step {after} within {timeout} s:\n{log.read_text()}")


def plant_half_written_checkpoint(run_dir: Path) -> Path:
    """A copy of a complete checkpoint under a later step's temporary name, its array data cut short."""
    source = run_dir / "checkpoints" / str(finished_steps(run_dir)[-1])
    planted = run_dir / "checkpoints" / f"{PLANTED}.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(source, planted)
    for f in (planted / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 64:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return planted


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return interruptible_config(tmp_path_factory.mktemp("resume"), STEPS)


@pytest.fixture(scope="module")
def reference(config_file):
    """The uninterrupted run: (losses by step, its trainer)."""
    trainer = Trainer(run_config(config_file))
    result = trainer.run()
    return {r["step"]: r["loss"] for r in read_metrics(result.run_dir)}, trainer


@pytest.fixture(scope="module")
def interrupted(config_file):
    """Run the interrupted history in `<folder>/interrupted`; returns what happened at each stage."""
    run_dir = config_file.parent / "interrupted"
    command = agentjax_command("train", "--config", str(config_file), f"output_dir={run_dir}")
    env = subprocess_env()
    story = {"run_dir": run_dir, "logs": [config_file.parent / f"run{i}.log" for i in (1, 2, 3)]}

    first = start(command, story["logs"][0], env)
    story["killed_after"] = wait_for_checkpoint(first, run_dir, 0, story["logs"][0])
    assert first.poll() is None, "run 1 finished before it could be killed; make the run longer"
    first.send_signal(signal.SIGKILL)
    first.wait()
    story["killed_with"] = finished_steps(run_dir)
    story["planted"] = plant_half_written_checkpoint(run_dir)

    second = start(command, story["logs"][1], env)
    wait_for_checkpoint(second, run_dir, story["killed_with"][-1], story["logs"][1])
    second.send_signal(signal.SIGTERM)
    story["sigterm_exit"] = second.wait(timeout=120)
    story["after_sigterm"] = finished_steps(run_dir)

    third = start(command, story["logs"][2], env)
    story["final_exit"] = third.wait(timeout=300)
    return story


def resumed_from(log: Path) -> int:
    lines = [line for line in log.read_text().splitlines() if "resumed from step" in line]
    assert len(lines) == 1, log.read_text()
    return int(lines[0].split("resumed from step ")[1].split()[0])


def test_kill_9_then_restart_equals_an_uninterrupted_run(interrupted, reference):
    """After SIGKILL mid-run (and a SIGTERM stop), the runs' logged losses for steps 1..40 and the final
    parameters are exactly those of the uninterrupted run."""
    assert interrupted["final_exit"] == 0, interrupted["logs"][2].read_text()
    assert resumed_from(interrupted["logs"][1]) == interrupted["killed_with"][-1] < STEPS
    expected_losses, trainer = reference
    losses = {r["step"]: r["loss"] for r in read_metrics(interrupted["run_dir"])}
    assert list(losses) == list(range(1, STEPS + 1))
    assert losses == expected_losses
    checkpoints = Checkpoints(interrupted["run_dir"], read_only=True)
    assert checkpoints.latest_step() == STEPS
    final = flat_params(checkpoints.restore_params(STEPS, abstract_like(trainer.state.params)))
    for name, value in flat_params(trainer.state.params).items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)


def test_a_half_written_checkpoint_is_never_resumed_from(interrupted):
    """A `<step>.orbax-checkpoint-tmp*` directory with a later step than any complete checkpoint is ignored
    (run 2 resumed from the last complete one) and cleaned away."""
    assert PLANTED > interrupted["killed_with"][-1]
    assert resumed_from(interrupted["logs"][1]) == interrupted["killed_with"][-1]
    assert not interrupted["planted"].exists()


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_the_rerun_resumes(interrupted):
    """SIGTERM: exit code 0, 'preempted' reported, a checkpoint at the step it stopped; the next run resumes there."""
    log = interrupted["logs"][1].read_text()
    assert interrupted["sigterm_exit"] == 0, log
    assert "preempted (rerun to resume)" in log
    stopped = interrupted["after_sigterm"][-1]
    assert f"preempted (rerun to resume): step {stopped}," in log
    assert interrupted["killed_with"][-1] < stopped < STEPS
    assert resumed_from(interrupted["logs"][2]) == stopped
