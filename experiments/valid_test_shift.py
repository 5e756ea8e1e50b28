r"""Why validation and test disagree about an RL policy: the per-user change in hit@K from the
start policy to the policy an rl run saved, on both splits, by target popularity and by user.

    SGREC_DATA_DIR=... python -m experiments.valid_test_shift --cell=CELL_DIR \
        [--step=STEP] [--k=10] [--buckets=5] [--out=CELL_DIR/valid_test_shift.json]

CELL_DIR is a finished rl run (an ablation cell: config.json, rl/checkpoints) whose start policy
(config.rl.init_workdir) is still on disk; both are only read. Both policies rank every
validation and test user (the run's beam size and level scoring; validation over all users, not
the eval.valid_users subset RL validated on). The per-user change hit_policy - hit_start is then
split (sgrec_jax/evaluation/hit_shift.py):
- by the target's popularity (its count as a training target), in --buckets quantile buckets
  whose edges come from the test targets, so both splits share buckets: each split's share of a
  bucket, both hit rates, the change and its contribution to the split's overall change, and the
  overall change one split's within-bucket changes give under the other split's mix;
- by whether the user's training examples were RL's requests (config.data.rl_holdout) or SFT's;
- and the per-user correlation of the two splits' changes.

Writes one JSON (the report, the step, the cell's config and provenance) and logs a summary.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import app, flags, logging

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path, write_json
from sgrec_jax.core.provenance import provenance
from sgrec_jax.data.holdout import holdout_mask
from sgrec_jax.data.sources import load_splits
from sgrec_jax.evaluation.hit_shift import SPLITS, valid_test_shift_report
from sgrec_jax.evaluation.metrics import recall_at_k
from sgrec_jax.rl.training import restore_policy
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.finished_run import check_rl_run_dir, load_run_dataset
from sgrec_jax.stages.rl import sft_start_policy
from sgrec_jax.train.evaluate import rank_with_generator

_CELL = flags.DEFINE_string("cell", None, "A finished rl run (e.g. an ablation cell), read only.")
_STEP = flags.DEFINE_integer("step", None, "The rl checkpoint's step (default: the run's last).")
_K = flags.DEFINE_integer("k", 10, "Cut-off of the hit rate (recall@K).")
_BUCKETS = flags.DEFINE_integer("buckets", 5, "Target-popularity buckets (test quantiles).")
_OUT = flags.DEFINE_string("out", None, "Output JSON (default CELL/valid_test_shift.json).")
flags.mark_flag_as_required("cell")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()

    def run() -> str:
        cell = as_path(_CELL.value)
        config, results = check_rl_run_dir(cell)
        step = _STEP.value if _STEP.value is not None else int(results["rl/last_step"])
        if _K.value < 1 or _K.value > config.eval.beam_size or _BUCKETS.value < 2:
            raise ValueError(f"need 1 <= --k <= the run's beam size {config.eval.beam_size} and "
                             f"--buckets >= 2, got {_K.value}, {_BUCKETS.value}")
        dataset = load_run_dataset(cell, config)
        splits = load_splits(dataset, max_history=config.data.max_history,
                             source=config.data.source, shards_dir=config.data.shards_dir)
        sids, start = sft_start_policy(config, dataset.num_items)
        # restore_policy builds its train state from the module it is given; a second copy
        # keeps `start` independent of it.
        policy = restore_policy(config, sft_start_policy(config, dataset.num_items)[1],
                                cell / "rl", step)
        catalog = jax.device_put(sids.catalog())
        counts = np.bincount(np.asarray(splits.train.target), minlength=dataset.num_items)
        hits, users, target_count = {}, {}, {}
        for split in SPLITS:
            examples = getattr(splits, split)
            hits[split] = {}
            for name, model in (("start", start), ("policy", policy)):
                rankings = rank_with_generator(
                    model, catalog, examples, beam_size=config.eval.beam_size, k=_K.value,
                    batch_size=config.eval.batch_size, level_scoring=config.eval.level_scoring)
                hits[split][name] = recall_at_k(rankings.items_uk, rankings.targets_u,
                                                _K.value) > 0
                logging.info("%s %s: recall@%d %.4f", split, name, _K.value,
                             hits[split][name].mean())
            users[split] = np.asarray(examples.user)
            target_count[split] = counts[np.asarray(examples.target)]
        held = holdout_mask(splits.train, config.data.rl_holdout)
        rl_users = np.unique(np.asarray(splits.train.user)[held])
        report = valid_test_shift_report(hits, users, target_count, rl_users,
                                        _BUCKETS.value)
        report.update(cell=str(cell), step=step, k=_K.value,
                      provenance=provenance(dataset.source_files, config))
        out = as_path(_OUT.value) if _OUT.value else cell / "valid_test_shift.json"
        write_json(out, report)
        lines = [f"wrote {out}"]
        for split in SPLITS:
            r = report["splits"][split]
            lines.append(f"{split}: recall@{_K.value} {r['start']:.4f} -> {r['policy']:.4f} "
                         f"({r['difference']:+.4f}); by popularity bucket (share, change): "
                         + ", ".join(f"q{g['group'] + 1} {g['share']:.3f} {g['difference']:+.4f}"
                                     for g in r["by_popularity"]))
        return "\n".join(lines)

    print(run_or_exit(run))


if __name__ == "__main__":
    run_app(main)
