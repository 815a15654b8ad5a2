#!/usr/bin/env bash
# Install JAX for TPU and this checkout of agentjax on every worker.
#   TPU_NAME=agentjax-v4 launch/setup.sh [--dry-run]
# The checkout's committed files (git archive HEAD) are copied to ~/$REMOTE_DIR on each worker and installed
# in a virtualenv there (with its tpu extra: libtpu, and gcsfs for gs:// paths), so every host runs the same code.
# Storage every host shares is a bucket, named directly: AGENTJAX_RUNS=gs://your-bucket/runs (and _DATA, _MODELS);
# nothing is mounted (agentjax writes gs:// objects itself and never renames a directory in a bucket).
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
  "~/$REMOTE_DIR/.venv/bin/pip install -q -e ~/$REMOTE_DIR[tpu]"
  "~/$REMOTE_DIR/.venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'"
)
install="$(printf ' && %s' "${steps[@]}")"
install="${install# && }"
on_all_workers "$install"
