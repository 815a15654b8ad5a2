#!/usr/bin/env bash
# Create a TPU VM (a single host such as v4-8, or every host of a pod slice such as v5p-64).
#   TPU_NAME=agentjax-v4 ACCELERATOR_TYPE=v4-8 launch/create.sh [--dry-run]
# SPOT=1 asks for a spot (preemptible) VM: cheaper; agentjax saves a checkpoint on SIGTERM and resumes when the
# same train command runs again.
source "$(dirname "$0")/common.sh"
require_gcloud

extra=()
if [[ "${SPOT:-0}" == "1" ]]; then extra+=(--spot); fi
run gcloud compute tpus tpu-vm create "$TPU_NAME" "${TPU_FLAGS[@]}" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
