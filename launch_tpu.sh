#!/usr/bin/env bash
# Sets up a TPU VM worker (venv, jax[tpu], the requirements) and runs one experiment on it.
#
# Run it on every worker of a pod slice at once, from your machine:
#   gcloud compute tpus tpu-vm scp --recurse . NAME:~/sgrec_jax --worker=all --zone=ZONE
#   gcloud compute tpus tpu-vm ssh NAME --worker=all --zone=ZONE \
#     --command='cd ~/sgrec_jax && ./launch_tpu.sh --config=experiments/configs/quickstart.py --workdir=gs://BUCKET/run1'
# Every argument is passed to `python -m experiments.train`. Set SGREC_SKIP_SETUP=1 to reuse the
# venv, SGREC_VENV to place it elsewhere, SGREC_JAX_EXTRA=cuda12 for the GPU equivalent.
set -euo pipefail

usage() {
  echo "usage: $0 --config=experiments/configs/NAME.py[:arg] --workdir=DIR [--config.FIELD=VALUE ...]" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
has_config=0
has_workdir=0
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage ;;
    --config=*) has_config=1 ;;
    --workdir=*) has_workdir=1 ;;
  esac
done
[[ $has_config -eq 1 && $has_workdir -eq 1 ]] || usage

cd "$(dirname "$0")"
venv="${SGREC_VENV:-$HOME/.venvs/sgrec_jax}"
if [[ "${SGREC_SKIP_SETUP:-0}" != "1" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "jax[${SGREC_JAX_EXTRA:-tpu}]" -r requirements.txt
fi

exec "$venv/bin/python" -m experiments.train "$@"
