#!/usr/bin/env bash
# Install JAX for TPU and this checkout of agentjax on every worker.
#   TPU_NAME=agentjax-v4 launch/setup.sh [--dry-run]
# The checkout's committed files (git archive HEAD) are copied to ~/$REMOTE_DIR on each worker and installed
# in a virtualenv there, so every host runs the same code. With BUCKET=gs://your-bucket, the bucket is also
# mounted at /mnt/agentjax on every worker (gcsfuse): multi-host runs must write checkpoints to storage that
# all hosts share, and it is the natural place for data and converted models.
source "$(dirname "$0")/common.sh"
require_gcloud

repo="$(cd "$(dirname "$0")/.." && pwd)"
archive="${TMPDIR:-/tmp}/agentjax-${TPU_NAME}.tar.gz"
run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:agentjax.tar.gz" "${TPU_FLAGS[@]}" --worker=all

steps=(
  "sudo apt-get update -qq"
  "sudo apt-get install -y -qq python3-venv"
  "mkdir -p ~/$REMOTE_DIR"
  "tar -xzf ~/agentjax.tar.gz -C ~/$REMOTE_DIR"
  "python3 -m venv ~/$REMOTE_DIR/.venv"
  "~/$REMOTE_DIR/.venv/bin/pip install -q -U pip 'jax[tpu]'"
  "~/$REMOTE_DIR/.venv/bin/pip install -q -e ~/$REMOTE_DIR"
  "~/$REMOTE_DIR/.venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'"
)
install="$(printf ' && %s' "${steps[@]}")"
install="${install# && }"
on_all_workers "$install"

if [[ -n "${BUCKET:-}" ]]; then
  mount_steps=(
    "echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list"
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null"
    "sudo apt-get update -qq"
    "sudo apt-get install -y -qq gcsfuse"
    "sudo mkdir -p /mnt/agentjax"
    "sudo chown \$USER /mnt/agentjax"
    "{ mountpoint -q /mnt/agentjax || gcsfuse --implicit-dirs ${BUCKET#gs://} /mnt/agentjax; }"
  )
  mount="$(printf ' && %s' "${mount_steps[@]}")"
  mount="${mount# && }"
  on_all_workers "$mount"
fi
