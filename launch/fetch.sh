#!/usr/bin/env bash
# Copy a run directory (checkpoints, metrics, evaluation transcripts) to this machine.
#   TPU_NAME=agentjax-v4 launch/fetch.sh [--dry-run] runs/fireact/llama2-7b-lora-hotpotqa [LOCAL_DIR]
# A path is relative to the checkout on worker 0 (~/$REMOTE_DIR), or absolute there, or a gs:// URL (a run a pod
# wrote to its bucket: copied from the bucket, no VM needed).
source "$(dirname "$0")/common.sh"
require_gcloud

paths=()
for arg in "$@"; do
  if [[ "$arg" != "--dry-run" ]]; then paths+=("$arg"); fi
done
if [[ ${#paths[@]} -lt 1 ]]; then
  echo "usage: TPU_NAME=... launch/fetch.sh [--dry-run] REMOTE_RUN_DIR [LOCAL_DIR]" >&2
  exit 2
fi
remote="${paths[0]}"
if [[ "$remote" == gs://* ]]; then
  local_dir="${paths[1]:-.}"
  run mkdir -p "$local_dir"
  run gcloud storage cp -r "$remote" "$local_dir"
  exit 0
fi
if [[ "$remote" != /* ]]; then remote="$REMOTE_DIR/$remote"; fi
local_dir="${paths[1]:-$(dirname "${paths[0]}")}"
run mkdir -p "$local_dir"
run gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$remote" "$local_dir" "${TPU_FLAGS[@]}" --worker=0
