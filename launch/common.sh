# Shared by the launch/*.sh scripts (sourced, not run): settings from the environment, and `run` which
# prints each command and, unless this is a dry run, executes it.
#
# Settings (environment variables):
#   TPU_NAME          name of the TPU VM (required)
#   ACCELERATOR_TYPE  v4-8 (default), v5litepod-16, v5p-64, ... (see configs/mesh/)
#   ZONE              default: a zone that offers the accelerator (us-central2-b for v4, us-west4-a for v5e,
#                     us-east5-a for v5p)
#   RUNTIME_VERSION   default: the TPU VM image for the accelerator's generation
#   PROJECT           Google Cloud project (default: gcloud's configured one)
#   DRY_RUN=1         print every command instead of running it (same as the --dry-run flag)

set -euo pipefail

for arg in "$@"; do
  if [[ "$arg" == "--dry-run" ]]; then DRY_RUN=1; fi
done
DRY_RUN="${DRY_RUN:-0}"

: "${TPU_NAME:?set TPU_NAME to the name of your TPU VM, e.g. TPU_NAME=agentjax-v4}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
case "$ACCELERATOR_TYPE" in
  v4-*)        default_zone=us-central2-b; default_runtime=tpu-ubuntu2204-base ;;
  v5litepod-*) default_zone=us-west4-a;    default_runtime=v2-alpha-tpuv5-lite ;;
  v5p-*)       default_zone=us-east5-a;    default_runtime=v2-alpha-tpuv5 ;;
  *)           default_zone="";            default_runtime="" ;;
esac
ZONE="${ZONE:-$default_zone}"
RUNTIME_VERSION="${RUNTIME_VERSION:-$default_runtime}"
: "${ZONE:?set ZONE for accelerator type $ACCELERATOR_TYPE}"

# The flags every `gcloud compute tpus tpu-vm` call shares.
TPU_FLAGS=(--zone="$ZONE")
if [[ -n "${PROJECT:-}" ]]; then TPU_FLAGS+=(--project="$PROJECT"); fi

# Where agentjax lives on every worker.
REMOTE_DIR="${REMOTE_DIR:-agentjax}"

run() {
  # Print the command, shell-quoted so it can be copied; run it unless DRY_RUN=1.
  local arg line="+"
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then line+=" $arg"; else line+=" ${arg@Q}"; fi
  done
  printf '%s\n' "$line"
  if [[ "$DRY_RUN" != "1" ]]; then
    "$@"
  fi
}

require_gcloud() {
  if [[ "$DRY_RUN" != "1" ]] && ! command -v gcloud >/dev/null 2>&1; then
    echo "gcloud not found: install the Google Cloud CLI (cloud.google.com/sdk), or pass --dry-run to see the commands" >&2
    exit 127
  fi
}

# Run a shell command on every worker of the TPU VM (all hosts of a pod slice, at once).
on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker=all --command="$1"
}

# Run a shell command on one worker (by number): single-host jobs.
on_worker() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker="$1" --command="$2"
}
