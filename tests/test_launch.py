"""launch/*.sh in dry-run mode: each prints the gcloud commands it would run, with the right flags, and runs none."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = ["create.sh", "setup.sh", "run.sh", "fetch.sh", "delete.sh"]


def launch(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run a launch script with only `env` among its settings (every call here is a dry run: nothing is executed)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "ACCELERATOR", "ZONE", "PROJECT",
                                                                           "AGENTJAX_", "BUCKET", "SPOT", "DETACH"))}
    full_env.update(env)
    return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True, env=full_env, timeout=60)


def commands(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("+ ") for line in lines), "dry-run output is one `+ command` line each"
    return [line[2:] for line in lines]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_refuse_to_run_without_a_tpu_name(script):
    """Every script is valid bash, and without TPU_NAME it stops with a message saying what to set."""
    assert subprocess.run(["bash", "-n", str(LAUNCH / script)]).returncode == 0
    result = launch(script, "--dry-run")
    assert result.returncode != 0 and "TPU_NAME" in result.stderr and not result.stdout


def test_create_dry_run_per_accelerator():
    """create: the accelerator type chooses zone and runtime image; SPOT and PROJECT add their flags."""
    (cmd,) = commands(launch("create.sh", "--dry-run", TPU_NAME="tpu-a"))
    assert cmd == ("gcloud compute tpus tpu-vm create tpu-a --zone=us-central2-b --accelerator-type=v4-8 "
                   "--version=tpu-ubuntu2204-base")
    (cmd,) = commands(launch("create.sh", TPU_NAME="tpu-b", ACCELERATOR_TYPE="v5p-64", SPOT="1", PROJECT="proj",
                             DRY_RUN="1"))
    assert cmd == ("gcloud compute tpus tpu-vm create tpu-b --zone=us-east5-a --project=proj "
                   "--accelerator-type=v5p-64 --version=v2-alpha-tpuv5 --spot")
    (cmd,) = commands(launch("create.sh", "--dry-run", TPU_NAME="c", ACCELERATOR_TYPE="v5litepod-16", ZONE="eu-x"))
    assert "--zone=eu-x" in cmd and "--version=v2-alpha-tpuv5-lite" in cmd


def test_setup_dry_run_installs_on_all_workers():
    """setup: archive the checkout, copy it to every worker, install jax[tpu] and agentjax with its tpu extra there
    (gcsfs: gs:// paths); nothing is mounted."""
    cmds = commands(launch("setup.sh", "--dry-run", TPU_NAME="tpu-a"))
    assert cmds[0].startswith("git -C ") and " archive " in cmds[0] and cmds[0].endswith("HEAD")
    assert cmds[1].startswith("gcloud compute tpus tpu-vm scp ") and "tpu-a:agentjax.tar.gz" in cmds[1]
    assert cmds[1].endswith("--worker=all")
    assert cmds[2].startswith("gcloud compute tpus tpu-vm ssh tpu-a --zone=us-central2-b --worker=all '--command=")
    assert "jax[tpu]" in cmds[2] and "pip install -q -e ~/agentjax[tpu]" in cmds[2]
    assert len(cmds) == 3 and "gcsfuse" not in " ".join(cmds)


def test_run_dry_run_sends_one_command_to_every_worker():
    """run: the command after `--` runs on --worker=all in the checkout's venv; data paths are passed, keys are not."""
    (cmd,) = commands(launch("run.sh", "--dry-run", "--", "agentjax", "train", "--config", "configs/x.yaml",
                             "output_dir=a b", TPU_NAME="pod", ACCELERATOR_TYPE="v5p-64",
                             AGENTJAX_RUNS="gs://b/runs", SERPAPI_API_KEY="secret-key"))
    assert cmd.startswith("gcloud compute tpus tpu-vm ssh pod --zone=us-east5-a --worker=all '--command=cd ~/agentjax && ")
    assert "source .venv/bin/activate" in cmd and "export AGENTJAX_RUNS=gs://b/runs;" in cmd
    assert cmd.endswith("agentjax train --config configs/x.yaml output_dir=a\\ b'")
    assert "secret-key" not in cmd
    (cmd,) = commands(launch("run.sh", "--dry-run", "--", "agentjax", "train", TPU_NAME="pod", DETACH="1"))
    assert "nohup agentjax train > launch.log 2>&1 < /dev/null &" in cmd
    for single_host in ("convert", "score"):  # one process writing one output, not one per worker into one path
        (cmd,) = commands(launch("run.sh", "--dry-run", "--", "agentjax", single_host, "a", "b", TPU_NAME="pod"))
        assert "--worker=0 " in cmd and "--worker=all" not in cmd and cmd.endswith(f"agentjax {single_host} a b'")
    missing = launch("run.sh", "--dry-run", TPU_NAME="pod")
    assert missing.returncode == 2 and "usage" in missing.stderr


def test_fetch_and_delete_dry_run():
    """fetch copies a run directory from worker 0 (relative paths are inside the checkout) or from its bucket;
    delete is --quiet."""
    cmds = commands(launch("fetch.sh", "--dry-run", "runs/fireact/x", TPU_NAME="tpu-a"))
    assert cmds == ["mkdir -p runs/fireact",
                    "gcloud compute tpus tpu-vm scp --recurse tpu-a:agentjax/runs/fireact/x runs/fireact "
                    "--zone=us-central2-b --worker=0"]
    cmds = commands(launch("fetch.sh", "--dry-run", "/data/runs/y", "out", TPU_NAME="tpu-a"))
    assert cmds[1].startswith("gcloud compute tpus tpu-vm scp --recurse tpu-a:/data/runs/y out ")
    assert commands(launch("fetch.sh", "--dry-run", "gs://b/runs/y", "out", TPU_NAME="tpu-a")) == [
        "mkdir -p out", "gcloud storage cp -r gs://b/runs/y out"]
    assert commands(launch("delete.sh", "--dry-run", TPU_NAME="tpu-a")) == [
        "gcloud compute tpus tpu-vm delete tpu-a --zone=us-central2-b --quiet"]
