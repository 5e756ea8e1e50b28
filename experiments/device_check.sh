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
# Set-up, each step only where it applies:
#   - PYTHONPATH gets this checkout, so nothing needs installing (PYTHON, default python3, must
#     have jax for the platform, flax, optax and orbax-checkpoint);
#   - wheels/ beside the code (or SGREC_WHEELS): its wheels are installed offline (pip
#     --no-index --no-deps) into a scratch folder put on PYTHONPATH and removed at the end, for an
#     image without internet (the lent GPU's has jax 0.11, flax, optax and orbax, but not the
#     five packages below);
#   - data/ beside the code becomes SGREC_DATA_DIR, unless that is set.
#
# The wheels, prepared where pip reaches PyPI (about 4.6 MB for Python 3.12 on x86-64; wheels/
# is git-ignored, so carry it to the machine with the code):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d wheels/ grain==0.2.18 array_record==0.8.6 ml_collections==1.1.0 \
#     tensorboardX==2.6.5 portpicker==1.6.0
set -euo pipefail

usage() {
  echo "usage: $0 [--platform=gpu|tpu|cpu] [--quick] [--out=FILE.json] [--config.FIELD=VALUE ...]"
}

cd "$(dirname "$0")/.."
repo=$(pwd)
fail() {
  echo "$0: $1" >&2
  usage >&2
  exit 2
}

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
case "$platform" in
  gpu) export JAX_PLATFORMS=cuda ;;
  tpu) export JAX_PLATFORMS=tpu ;;
  cpu) export JAX_PLATFORMS=cpu ;;
  *) fail "--platform must be gpu, tpu or cpu, got '$platform'" ;;
esac
sizes=$platform
if [[ $quick == 1 ]]; then
  [[ $platform == cpu ]] || fail "--quick is for --platform=cpu"
  sizes=quick
fi
python="${PYTHON:-python3}"

pythonpath="$repo"
wheel_dir="${SGREC_WHEELS:-$repo/wheels}"
shopt -s nullglob
wheels=("$wheel_dir"/*.whl)
if [[ ${#wheels[@]} -gt 0 ]]; then
  site=$(mktemp -d "${TMPDIR:-/tmp}/sgrec_wheels.XXXXXX")
  trap 'rm -rf "$site"' EXIT
  echo "installing ${#wheels[@]} wheels from $wheel_dir into $site" >&2
  "$python" -m pip install --quiet --no-index --find-links "$wheel_dir" --no-deps \
    --no-compile --target "$site" "${wheels[@]}"
  pythonpath="$pythonpath:$site"
fi
export PYTHONPATH="$pythonpath${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z ${SGREC_DATA_DIR:-} && -d "$repo/data" ]]; then
  export SGREC_DATA_DIR="$repo/data"
fi
export PYTHONUNBUFFERED=1

# Not exec: the trap above removes the installed wheels when Python exits.
"$python" -m experiments.device_check \
  --config="$repo/experiments/configs/device_check.py:$sizes" ${args[@]+"${args[@]}"}
