#!/usr/bin/env bash
# Any experiment command on a lent accelerator, with what it wrote brought back as one file:
#
#   bash experiments/on_device.sh [--platform=gpu|tpu|cpu] [--time_limit=SECONDS] \
#     [--bring=PATH ...] -- COMMAND [ARG ...]
#
# e.g. the Beauty seeds of a recipe on one GPU, archived by the runner into docs/results/runs/:
#
#   bash experiments/on_device.sh --time_limit=540 --bring=docs/results/runs/beauty_x -- \
#     python3 -m experiments.multi_seed --config=experiments/configs/beauty_sft.py:rq_kmeans \
#       --workdir=workdirs/beauty_x --seeds=0,1,2 --archive=docs/results/runs/beauty_x
#
# The set-up is experiments/device_env.sh's (JAX_PLATFORMS for --platform, default gpu; this
# checkout on PYTHONPATH; wheels/ installed offline; data/ beside the code as SGREC_DATA_DIR:
# copy the datasets the command reads there and carry it, since ../shared does not travel).
# COMMAND runs in the checkout; its output goes to the terminal and to OUT_DIR/on_device.log.
# When it ends (or --time_limit stops it, with SIGTERM and 30 s later SIGKILL, leaving time for
# the rest), the --bring paths that exist (files or folders, relative to the checkout: results
# and logs, not work directories, whose checkpoints are large) are packed into
# OUT_DIR/brought.tar.gz, and OUT_DIR/on_device.json records the command, its exit status, its
# wall time, what was packed and what was missing. OUT_DIR is $OUT when set (the device tool's
# folder that comes back), else workdirs/on_device. Here, unpack with
# `tar -xzf .../brought.tar.gz` in the checkout. Exits with COMMAND's status (124 when
# --time_limit stopped it, 137 when it then had to be killed), 2 for bad arguments; the record
# holds tar's status too ("tar_status").
set -euo pipefail

usage() {
  echo "usage: $0 [--platform=gpu|tpu|cpu] [--time_limit=SECONDS] [--bring=PATH ...] -- COMMAND [ARG ...]"
}

# shellcheck source=experiments/device_env.sh
source "$(dirname "$0")/device_env.sh"

platform=gpu time_limit=0
bring=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --platform=*) platform="${1#*=}" ;;
    --time_limit=*) time_limit="${1#*=}" ;;
    --bring=*) bring+=("${1#*=}") ;;
    --) shift; break ;;
    *) device_usage_error "unknown option '$1' (the command goes after --)" ;;
  esac
  shift
done
[[ $# -gt 0 ]] || device_usage_error "no command after --"
device_check_platform "$platform"
[[ $time_limit =~ ^(0|[1-9][0-9]*)$ ]] || device_usage_error "--time_limit must be whole seconds, got '$time_limit'"
for path in ${bring[@]+"${bring[@]}"}; do
  case "$path" in
    /* | ../* | */../* | .. | */..) device_usage_error "--bring paths are relative to the checkout, got '$path'" ;;
    "" | . | ./ | workdirs | workdirs/ | -*)
      device_usage_error "--bring names results and logs inside the checkout, not '$path'" ;;
  esac
done

device_env_setup "$platform"
out_dir="${OUT:-$DEVICE_REPO/workdirs/on_device}"
mkdir -p "$out_dir"
log="$out_dir/on_device.log"

# The command runs in the background so that a signal to this script (Ctrl-C, a harness ending
# the device call) reaches it: GNU timeout runs in a process group of its own, which a kill of
# this script's group would miss. Its output goes to the terminal and the log through one tee.
rm -f "$out_dir/brought.tar.gz"  # never leave an earlier run's archive beside this record
exec 3> >(tee "$log")
tee_pid=$!
start=$(date +%s)
if ((10#$time_limit > 0)); then
  timeout --kill-after=30 "$time_limit" "$@" >&3 2>&3 &
else
  "$@" >&3 2>&3 &
fi
command_pid=$!
trap 'kill -TERM "$command_pid" 2>/dev/null || true' INT TERM
status=0
wait "$command_pid" || status=$?
while kill -0 "$command_pid" 2>/dev/null; do  # a trapped signal interrupted the wait
  status=0
  wait "$command_pid" || status=$?
done
trap - INT TERM
wall=$(($(date +%s) - start))
exec 3>&-
wait "$tee_pid" || true

packed=()
missing=()
for path in ${bring[@]+"${bring[@]}"}; do
  if [[ -e $path ]]; then packed+=("$path"); else missing+=("$path"); fi
done
tar_status=0
if [[ ${#packed[@]} -gt 0 ]]; then
  tar -czf "$out_dir/brought.tar.gz" -- "${packed[@]}" || tar_status=$?
  if [[ $tar_status == 0 ]]; then
    echo "packed ${packed[*]} into $out_dir/brought.tar.gz ($(du -k "$out_dir/brought.tar.gz" | cut -f1) KiB)" >&2
  else
    echo "tar exited with $tar_status packing ${packed[*]}" >&2
  fi
fi
[[ ${#missing[@]} -eq 0 ]] || echo "not found, not packed: ${missing[*]}" >&2

"$DEVICE_PYTHON" - "$out_dir/on_device.json" "$status" "$wall" "$platform" "$tar_status" \
  "${#packed[@]}" ${packed[@]+"${packed[@]}"} ${missing[@]+"${missing[@]}"} -- "$@" <<'EOF'
import json, sys
path, status, wall, platform, tar_status, num_packed, *rest = sys.argv[1:]
split = rest.index("--")
paths, command = rest[:split], rest[split + 1:]
num_packed = int(num_packed)
record = {"command": command, "exit_status": int(status), "wall_seconds": int(wall),
          "platform": platform, "packed": paths[:num_packed], "missing": paths[num_packed:],
          "tar_status": int(tar_status)}
with open(path, "w") as f:
    json.dump(record, f, indent=2)
EOF
echo "exit status $status after ${wall}s (record: $out_dir/on_device.json)" >&2
exit "$status"
