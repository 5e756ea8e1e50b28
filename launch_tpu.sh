#!/usr/bin/env bash
# Runs `python -m experiments.train ARGS` on every worker of a Cloud TPU VM, or on this host.
#
# From your machine: copies the code to every worker of TPU VM NAME, then runs
# `./launch_tpu.sh -- ARGS` on all of them at once (each sets itself up, then trains):
#   ./launch_tpu.sh --tpu=NAME [--zone=ZONE] [--project=ID] -- --config=FILE.py --workdir=/mnt/shared/D
# On one host (a TPU worker; a GPU host with SGREC_JAX_EXTRA=cuda12): sets up a venv
# (SGREC_PYTHON, default python3 >= 3.11; "jax[$SGREC_JAX_EXTRA]", default tpu; requirements.txt)
# at SGREC_VENV (default ~/.venvs/sgrec_jax), or reuses it with SGREC_SKIP_SETUP=1, then trains:
#   ./launch_tpu.sh -- --config=FILE.py --workdir=DIR
# Everything after `--` goes to experiments.train unchanged. --dry_run (or LAUNCH_DRY_RUN=1)
# prints the commands, shell-quoted, instead of running them.
set -euo pipefail

usage() {
  echo "usage: $0 [--tpu=NAME [--zone=ZONE] [--project=ID]] [--dry_run] --" \
    "--config=FILE.py[:ARG] --workdir=DIR [--config.FIELD=VALUE ...]"
}

fail() {
  echo "$0: $1" >&2
  usage >&2
  exit 2
}

quote() {
  local s
  s=$(printf '%q ' "$@")
  echo "${s% }"
}

# `run exec CMD` replaces this shell by CMD, so training receives a preemption's SIGTERM itself.
run() {
  if [[ $dry_run == 1 ]]; then
    [[ $1 == exec ]] && shift
    quote "$@"
  else
    "$@"
  fi
}

tpu="" zone="" project="" dry_run="${LAUNCH_DRY_RUN:-0}"
while [[ $# -gt 0 && $1 != -- ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --tpu=?*) tpu="${1#*=}" ;;
    --zone=?*) zone="${1#*=}" ;;
    --project=?*) project="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    *) fail "unknown option '$1' (training flags go after '--')" ;;
  esac
  shift
done
[[ $# -gt 0 ]] || fail "missing '--' and the training flags"
shift
train=("$@")
has_config=0 has_workdir=0
for arg in "${train[@]}"; do
  case "$arg" in
    --config | --config=*) has_config=1 ;;
    --workdir | --workdir=*) has_workdir=1 ;;
  esac
done
[[ $has_config == 1 ]] || fail "missing --config"
[[ $has_workdir == 1 ]] || fail "missing --workdir"
cd "$(dirname "$0")"

if [[ -n $tpu ]]; then
  tpu_vm=(gcloud compute tpus tpu-vm)
  where=(--worker=all ${zone:+"--zone=$zone"} ${project:+"--project=$project"})
  run "${tpu_vm[@]}" ssh "$tpu" "${where[@]}" --command="mkdir -p sgrec_jax"
  run "${tpu_vm[@]}" scp --recurse launch_tpu.sh requirements.txt pyproject.toml sgrec_jax \
    experiments "$tpu:sgrec_jax" "${where[@]}"
  run "${tpu_vm[@]}" ssh "$tpu" "${where[@]}" \
    --command="cd sgrec_jax && ./launch_tpu.sh -- $(quote "${train[@]}")"
  exit 0
fi

venv="${SGREC_VENV:-$HOME/.venvs/sgrec_jax}"
if [[ ${SGREC_SKIP_SETUP:-0} != 1 ]]; then
  run "${SGREC_PYTHON:-python3}" -m venv "$venv"
  run "$venv/bin/pip" install --quiet --upgrade pip
  run "$venv/bin/pip" install --quiet "jax[${SGREC_JAX_EXTRA:-tpu}]" -r requirements.txt
fi
run exec "$venv/bin/python" -m experiments.train "${train[@]}"
