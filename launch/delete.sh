#!/usr/bin/env bash
# Delete the TPU VM (every host of the slice). Fetch what you need first: the VMs' disks go with them.
#   TPU_NAME=agentjax-v4 launch/delete.sh [--dry-run]
source "$(dirname "$0")/common.sh"
require_gcloud

run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${TPU_FLAGS[@]}" --quiet
