# shellcheck shell=bash
# The set-up every command on a lent accelerator needs, sourced by experiments/device_check.sh
# and experiments/on_device.sh (not run on its own):
#
#   source experiments/device_env.sh
#   device_env_setup PLATFORM   # gpu | tpu | cpu
#
# It sets, each only where it applies:
#   - JAX_PLATFORMS (cuda, tpu or cpu), so a missing accelerator fails rather than JAX falling
#     back to the CPU;
#   - PYTHONPATH: this checkout, so nothing needs installing (PYTHON, default python3, must have
#     jax for the platform, flax, optax and orbax-checkpoint);
#   - the wheels in wheels/ beside the code (or SGREC_WHEELS), installed offline (pip --no-index
#     --no-deps) into a scratch folder put on PYTHONPATH and removed when the shell exits: an
#     image without internet (the lent GPU's has jax 0.11, flax, optax and orbax, but not the
#     five packages below);
#   - SGREC_DATA_DIR: data/ beside the code, unless it is set (../shared does not travel);
#   - PYTHONUNBUFFERED, so a log cut off by a time limit holds everything printed before.
# and DEVICE_PYTHON (the interpreter) and DEVICE_REPO (this checkout, the working directory).
#
# The wheels, prepared where pip reaches PyPI (about 4.6 MB for Python 3.12 on x86-64; wheels/
# is git-ignored, so carry it to the machine with the code):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d wheels/ grain==0.2.18 array_record==0.8.6 ml_collections==1.1.0 \
#     tensorboardX==2.6.5 portpicker==1.6.0

DEVICE_REPO="$(CDPATH='' cd -- "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE_PYTHON="${PYTHON:-python3}"
DEVICE_WHEEL_SITE=""

# Removes the scratch folder of installed wheels (registered as an EXIT trap by the set-up).
device_env_cleanup() {
  if [[ -n $DEVICE_WHEEL_SITE ]]; then
    rm -rf "$DEVICE_WHEEL_SITE"
  fi
}

# device_usage_error MESSAGE: a bad argument of the sourcing script, which defines usage():
# the message, the usage, exit status 2.
device_usage_error() {
  echo "$0: $1" >&2
  usage >&2
  exit 2
}

# device_check_platform PLATFORM: a usage error unless gpu, tpu or cpu.
device_check_platform() {
  case "$1" in
    gpu | tpu | cpu) ;;
    *) device_usage_error "--platform must be gpu, tpu or cpu, got '$1'" ;;
  esac
}

# device_env_setup PLATFORM: returns 2 (with a message) for an unknown platform.
device_env_setup() {
  case "$1" in
    gpu) export JAX_PLATFORMS=cuda ;;
    tpu) export JAX_PLATFORMS=tpu ;;
    cpu) export JAX_PLATFORMS=cpu ;;
    *)
      echo "--platform must be gpu, tpu or cpu, got '$1'" >&2
      return 2
      ;;
  esac
  cd "$DEVICE_REPO" || return 1
  local pythonpath="$DEVICE_REPO"
  local wheel_dir="${SGREC_WHEELS:-$DEVICE_REPO/wheels}"
  local wheels=()
  local had_nullglob=0
  shopt -q nullglob && had_nullglob=1
  shopt -s nullglob
  wheels=("$wheel_dir"/*.whl)
  [[ $had_nullglob == 1 ]] || shopt -u nullglob
  if [[ ${#wheels[@]} -gt 0 ]]; then
    DEVICE_WHEEL_SITE=$(mktemp -d "${TMPDIR:-/tmp}/sgrec_wheels.XXXXXX")
    trap device_env_cleanup EXIT
    echo "installing ${#wheels[@]} wheels from $wheel_dir into $DEVICE_WHEEL_SITE" >&2
    "$DEVICE_PYTHON" -m pip install --quiet --no-index --find-links "$wheel_dir" --no-deps \
      --no-compile --target "$DEVICE_WHEEL_SITE" "${wheels[@]}" || return 1
    pythonpath="$pythonpath:$DEVICE_WHEEL_SITE"
  fi
  export PYTHONPATH="$pythonpath${PYTHONPATH:+:$PYTHONPATH}"
  if [[ -z ${SGREC_DATA_DIR:-} && -d "$DEVICE_REPO/data" ]]; then
    export SGREC_DATA_DIR="$DEVICE_REPO/data"
  fi
  export PYTHONUNBUFFERED=1
}
