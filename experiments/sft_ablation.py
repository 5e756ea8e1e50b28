r"""One-seed ablation of generator recipes: each variant's run, one table with the floors beside it.

    python -m experiments.sft_ablation --config=experiments/configs/scientific_sft.py \
        --workdir=DIR --variant=base --variant='buckets:sft.length_buckets=(3,8)' \
        --variant='item_id:sft.length_buckets=(3,8);model.options.item_id_embedding=True' \
        [--reference=base] [--export=docs/results/scientific_sft_ablation.json] \
        [--num_resamples=10000] [--config.FIELD=VALUE ...]

A variant is NAME (the config as given) or NAME:field=value;field=value. To adopt a run made
earlier with the same config, symlink it as DIR/NAME before running. What each run writes and
how it resumes: see sgrec_jax/stages/recipe_ablation.py, which holds the logic.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from experiments.configs.common import base_config
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.recipe_ablation import pick_reference, run_variants, summarize
from sgrec_jax.stages.variants import parse_variants

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Ablation directory: one folder per variant, the tables."
)
_VARIANTS = flags.DEFINE_multi_string(
    "variant", [], "NAME or NAME:field=value;field=value (dotted config fields, Python literals "
    "or raw strings); repeat for each row."
)
_REFERENCE = flags.DEFINE_string(
    "reference", None, "The variant every other is bootstrapped against (default: the first)."
)
_EXPORT = flags.DEFINE_string(
    "export", None, "Also write the table as a results file in benchmarks.md's format."
)
_NUM_RESAMPLES = flags.DEFINE_integer("num_resamples", 10_000, "Bootstrap resamples.")
_BOOTSTRAP_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "Seeds the bootstrap resampling.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()

    def run() -> str:
        variants = parse_variants(_VARIANTS.value)
        reference = pick_reference(variants, _REFERENCE.value)
        # A finished run adopts a field added after it ran when it holds the code's default.
        runs = run_variants(_CONFIG.value, _WORKDIR.value, variants, defaults=base_config())
        return summarize(_WORKDIR.value, runs, reference=reference, export=_EXPORT.value,
                         num_resamples=_NUM_RESAMPLES.value, bootstrap_seed=_BOOTSTRAP_SEED.value)

    print(run_or_exit(run))


if __name__ == "__main__":
    run_app(main)
