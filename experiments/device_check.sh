#!/usr/bin/env bash
# The device check: whether sgrec_jax works on this machine's accelerator and how fast, as one
# JSON file (sgrec_jax/benchmarks/device_check.py says what it measures; under 8 minutes on one
# GPU, about 3 on a 2-core CPU).
#
#   bash experiments/device_check.sh [--platform=gpu|tpu|cpu] [--quick] [--out=FILE.json] [FLAGS]
#
# --platform (default gpu) picks JAX's backend (JAX_PLATFORMS: cuda, tpu or cpu; JAX fails rather
# than fall back to the CPU) and the sizes (experiments/configs/device_check.py:PLATFORM);
# --quick (with --platform=cpu) tiny sizes, for the test. The other flags go to
# `python -m experiments.device_check` unchanged (e.g. --config.parts=peak,sft).
# The JSON goes to --out, by default $OUT/device_check.json when $OUT is set, else
# workdirs/device_check.json. Exits 0 only when every check passed and no part failed.
#
# The set-up (JAX_PLATFORMS, PYTHONPATH, offline wheels from wheels/, data/ as SGREC_DATA_DIR) is
# experiments/device_env.sh's, shared with experiments/on_device.sh; the command that prepares
# the wheels is in its header.
set -euo pipefail

usage() {
  echo "usage: $0 [--platform=gpu|tpu|cpu] [--quick] [--out=FILE.json] [--config.FIELD=VALUE ...]"
}

# shellcheck source=experiments/device_env.sh
source "$(dirname "$0")/device_env.sh"

platform=gpu quick=0
args=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --platform=*) platform="${arg#*=}" ;;
    --quick) quick=1 ;;
    *) args+=("$arg") ;;
  esac
done
device_check_platform "$platform"
sizes=$platform
if [[ $quick == 1 ]]; then
  [[ $platform == cpu ]] || device_usage_error "--quick is for --platform=cpu"
  sizes=quick
fi
device_env_setup "$platform"

# Not exec: the set-up's EXIT trap removes the installed wheels when Python exits.
"$DEVICE_PYTHON" -m experiments.device_check \
  --config="$DEVICE_REPO/experiments/configs/device_check.py:$sizes" ${args[@]+"${args[@]}"}
