r"""How well the learned reward channels track the synthetic world's ground truth, by conflict.

    python -m experiments.reward_correlations --config=experiments/configs/quickstart.py \
        --workdir=DIR [--conflicts=0,1] [--num_requests=1000] [--group=20] \
        [--options='{"ecpm": {"ctr_steps": 1000}}']

For each world `conflict` value, scores `num_requests` test requests x `group` uniformly random
candidates with ecpm, emb_cosine, true_business and true_relevance, and reports Spearman rank
correlations over all (request, candidate) pairs: ecpm vs true_business, emb_cosine vs
true_relevance, and business vs semantic (ecpm vs emb_cosine; true_business vs true_relevance).
Logs and text do not depend on `conflict` (only bids, quality and clicks do), so every conflict
shares DIR's cached pCTR model and text embeddings; each uses its own world's bids.
Writes DIR/rewards/reward_correlations.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import scipy.stats
from absl import app, flags
from ml_collections import ConfigDict, config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path, write_json
from sgrec_jax.data.split import leave_one_out
from sgrec_jax.rewards.channel import RewardRequests, RewardSetup, build_channels, reward_tensor
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.pipeline import load_configured_dataset

CHANNELS = ("ecpm", "emb_cosine", "true_business", "true_relevance")
PAIRS = (("ecpm", "true_business"), ("emb_cosine", "true_relevance"), ("ecpm", "emb_cosine"),
         ("true_business", "true_relevance"))
REPORT_FILE = "reward_correlations.json"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file with a synthetic data section.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (reward caches in rewards/).")
_CONFLICTS = flags.DEFINE_list("conflicts", ["0", "1"], "World conflict values to compare.")
_NUM_REQUESTS = flags.DEFINE_integer("num_requests", 1000, "Test requests scored per world.")
_GROUP = flags.DEFINE_integer("group", 20, "Random candidates per request.")
_OPTIONS = flags.DEFINE_string("options", "{}", "JSON: channel -> option overrides.")
flags.mark_flags_as_required(["config", "workdir"])


def correlations(config: ConfigDict, workdir: str, conflicts: Sequence[float], *,
                 num_requests: int, group: int,
                 options: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    if config.data.format != "synthetic":
        raise ValueError(f"needs a synthetic world, got data.format {config.data.format!r}")
    out: dict[str, Any] = {"num_requests": num_requests, "group": group, "by_conflict": {}}
    for conflict in conflicts:
        world_config = config.copy_and_resolve_references()
        world_config.data.options.conflict = float(conflict)
        dataset = load_configured_dataset(world_config)
        setup = RewardSetup(world_config, dataset, workdir, seed=config.seed)
        channels = build_channels(setup, CHANNELS, options)
        test = leave_one_out(dataset, config.data.max_history).test
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(len(test), min(num_requests, len(test)), replace=False))
        requests = RewardRequests.from_examples(
            type(test)(test.history[rows], test.target[rows], test.user[rows]))
        items_bg = rng.integers(0, dataset.num_items, (len(rows), group)).astype(np.int32)
        rewards_bgk = np.asarray(jax.jit(reward_tensor)(
            channels, requests, items_bg, np.zeros(items_bg.shape, np.float32)))
        flat = {name: rewards_bgk[..., k].ravel() for k, name in enumerate(CHANNELS)}
        out["by_conflict"][str(conflict)] = {
            f"{a} vs {b}": float(scipy.stats.spearmanr(flat[a], flat[b]).statistic)
            for a, b in PAIRS
        }
    write_json(os.path.join(workdir, "rewards", REPORT_FILE), out)
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    conflicts = [float(c) for c in _CONFLICTS.value]
    report = run_or_exit(lambda: correlations(
        _CONFIG.value, as_path(_WORKDIR.value), conflicts,
        num_requests=_NUM_REQUESTS.value, group=_GROUP.value,
        options=json.loads(_OPTIONS.value)))
    print(f"Spearman over {report['num_requests']} requests x {report['group']} random items")
    for conflict, values in report["by_conflict"].items():
        for pair, rho in values.items():
            print(f"conflict {conflict}: {pair:>36s}  {rho:+.3f}")


if __name__ == "__main__":
    run_app(main)
