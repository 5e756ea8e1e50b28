#!/usr/bin/env bash
# Our RL step beside TRL's GRPOTrainer, interleaved on one machine (issue 14's side by side).
#
#   bash experiments/peers/rl_step_vs_trl.sh OUT_DIR TRL_PYTHON [BEFORE_CHECKOUT] [ROUNDS]
#
# Each round runs, one after another: our RL step at BEFORE_CHECKOUT (a `git worktree` of an
# earlier commit; skipped when not given), our RL step in this checkout, then TRL at 4 and at 8
# layers (the order of the two alternating by round). TRL_PYTHON is a virtual environment's python
# with TRL installed (see experiments/peers/trl_grpo_step.py). Each run writes one JSON file into
# OUT_DIR: before_R.json, after_R.json, trl_L4_R.json, trl_L8_R.json. Run it on a quiet machine
# (nothing else training); it prints the load average before and after.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: bash $0 OUT_DIR TRL_PYTHON [BEFORE_CHECKOUT] [ROUNDS]" >&2; exit 2
fi
if [[ ! -x "$2" ]]; then
  echo "$0: TRL_PYTHON '$2' is not an executable python (see experiments/peers/trl_grpo_step.py)" >&2
  exit 2
fi
out=$(realpath -m "$1"); trl_python=$2; before=${3:-}; rounds=${4:-4}
here=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
ours=(--config=experiments/configs/benchmark.py --config.sections=rl
      --config.history_encodings=item --config.rl_steps=10)
python=${PYTHON:-$here/.venv/bin/python}
uptime
for r in $(seq 1 "$rounds"); do
  if [[ -n "$before" ]]; then
    (cd "$before" && JAX_PLATFORMS=cpu "$python" -m experiments.benchmark "${ours[@]}" \
       --out="$out/before_$r.json" 2>&1 | grep "RL step" | sed 's/^/before /')
  fi
  (cd "$here" && JAX_PLATFORMS=cpu "$python" -m experiments.benchmark "${ours[@]}" \
     --out="$out/after_$r.json" 2>&1 | grep "RL step" | sed 's/^/after /')
  first=$(( r % 2 == 1 ? 4 : 8 ))
  for layers in "$first" $(( 12 - first )); do
    "$trl_python" "$here/experiments/peers/trl_grpo_step.py" --steps=5 --layers="$layers" \
      --out="$out/trl_L${layers}_$r.json" 2>&1 | tail -1
  done
done
uptime
