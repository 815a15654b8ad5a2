#!/usr/bin/env bash
# Run one command on every worker at once, from the agentjax checkout, in its virtualenv; on a pod slice the
# processes find each other by themselves (jax.distributed), so the same command goes to all hosts. Single-host
# subcommands (agentjax convert, score, data, compile) go to worker 0 only.
#   TPU_NAME=agentjax-v4 launch/run.sh [--dry-run] -- agentjax train --config configs/fireact/llama2-7b-lora-hotpotqa.yaml
# AGENTJAX_DATA, AGENTJAX_MODELS and AGENTJAX_RUNS, when set here, are passed on (paths on the workers, or
# gs:// URLs that every host shares). Secrets such as SERPAPI_API_KEY are not passed (they would show in process lists and
# in --dry-run output): put `export SERPAPI_API_KEY=...` in ~/.agentjax_env on the workers; it is sourced first.
# DETACH=1 starts the command in the background on every worker (output in ~/$REMOTE_DIR/launch.log) and
# returns at once, so a long run survives a dropped SSH connection; follow it with
#   launch/run.sh -- tail -n 20 launch.log
source "$(dirname "$0")/common.sh"
require_gcloud

command=()
seen_separator=0
for arg in "$@"; do
  if [[ "$seen_separator" == "1" ]]; then command+=("$arg")
  elif [[ "$arg" == "--" ]]; then seen_separator=1
  fi
done
if [[ ${#command[@]} -eq 0 ]]; then
  echo "usage: TPU_NAME=... launch/run.sh [--dry-run] -- COMMAND [ARGS...]" >&2
  exit 2
fi

exports=""
for var in AGENTJAX_DATA AGENTJAX_MODELS AGENTJAX_RUNS; do
  if [[ -n "${!var:-}" ]]; then exports+="export $var=$(printf '%q' "${!var}"); "; fi
done
quoted="$(printf '%q ' "${command[@]}")"
quoted="${quoted% }"
if [[ "${DETACH:-0}" == "1" ]]; then quoted="nohup $quoted > launch.log 2>&1 < /dev/null &"; fi
remote="cd ~/$REMOTE_DIR && source .venv/bin/activate && { [ -f ~/.agentjax_env ] && source ~/.agentjax_env || true; } && ${exports}${quoted}"
# Single-host subcommands (one process, no jax.distributed) run on worker 0 only: on every worker at once they
# would write the same output path (convert, score) or do the same work four times (data, compile).
if [[ "${command[0]}" == "agentjax" && " convert score data compile " == *" ${command[1]:-} "* ]]; then
  on_worker 0 "$remote"
else
  on_all_workers "$remote"
fi
