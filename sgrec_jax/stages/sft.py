"""The "sft" stage: next-item SID prediction with teacher forcing, then test evaluation.

Trains the configured generator (config.model) on the leave-one-out training examples, less
those config.data.rl_holdout keeps for RL (data/holdout.py), with the shared supervised loop
(validation NDCG@10 by constrained beam search on a fixed subset of validation users, early
stopping, Orbax checkpoints in DIR/sft), then ranks the full test split with the best
checkpoint (eval.test_users > 0: a seeded subset of it). Results: recall@5, ndcg@5, recall@10,
ndcg@10, valid_rate, argmax_invalid_rate, coverage@10 by name; ranked lists in
DIR/sft/test_rankings.npz.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from absl import logging
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.distributed import is_primary_process
from sgrec_jax.data.holdout import check_rl_holdout, sft_examples
from sgrec_jax.data.shard_dataset import ShardDataset
from sgrec_jax.data.sources import check_data_source, load_splits
from sgrec_jax.data.split import training_sequences
from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.decoding.beam_search import LEVEL_SCORINGS
from sgrec_jax.models.counting import training_transitions
from sgrec_jax.models.registry import build_model, parse_options
from sgrec_jax.stages.pipeline import RunContext, Stage
from sgrec_jax.stages.reports import ranked_test_split, report_test_split
from sgrec_jax.train.augment import crop_histories
from sgrec_jax.train.evaluate import rank_with_generator, ranking_report, scalar_metrics, subsample
from sgrec_jax.train.next_item import next_item_nll
from sgrec_jax.train.supervised import check_training_config, train_supervised
from sgrec_jax.train.train_state import LossFn


def make_sft_loss(history_crop: float = 0.0, crop_max_keep: int = 0,
                  generator_nll_weight: float = 0.0) -> LossFn:
    """The SFT loss: cross-entropy of the target item's L SID tokens (`train.next_item`,
    summed over levels, mean over the batch). With history_crop > 0 that share of the batch
    trains on a random recent suffix of its history of at most crop_max_keep items (0: any
    length; `train.augment.crop_histories`).

    generator_nll_weight > 0 (a copy-head model) adds that weight times the same cross-entropy
    under the generator part's own logits, before the copy head mixes its pointer in. The
    mixture's NLL gives the generator little gradient on a target the pointer already explains,
    and measured alone (`experiments.evaluate_checkpoint --without_copy_head`) the generator
    of a copy model ranks the users whose target is not in the memory below a plain
    generator; this term has it learn every target as a plain generator does."""
    if not 0.0 <= history_crop <= 1.0:
        raise ValueError(f"history_crop must be in [0, 1], got {history_crop}")
    if crop_max_keep < 0:
        raise ValueError(f"crop_max_keep must be >= 0 (0 = no cap), got {crop_max_keep}")
    if generator_nll_weight < 0:
        raise ValueError(f"generator_nll_weight must be >= 0, got {generator_nll_weight}")

    def loss(model: nnx.Module, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        nnx.reseed(model, default=rng)
        mask_bh = crop_histories(batch["history_mask"], jax.random.fold_in(rng, 1), history_crop,
                                 crop_max_keep)
        codes_bl = model.item_codes(batch["target"])
        logits_blv = model(batch["history"], mask_bh, codes_bl, deterministic=False,
                           target_items_b=batch["target"],
                           with_generator_logits=generator_nll_weight > 0)
        extra = {}
        if generator_nll_weight > 0:
            logits_blv, generated_blv = logits_blv
            extra["generator_nll"] = next_item_nll(generated_blv, codes_bl).sum(-1).mean()
        nll_bl = next_item_nll(logits_blv, codes_bl)
        exact_b = jnp.all(jnp.argmax(logits_blv, -1) == codes_bl, axis=-1)
        loss = nll_bl.sum(-1).mean() + generator_nll_weight * extra.get("generator_nll", 0.0)
        return loss, {"token_nll": nll_bl.mean(), "teacher_forced_acc": exact_b.mean(), **extra}

    return loss


sft_loss = make_sft_loss()  # no augmentation


def _check(config: ConfigDict) -> None:
    if "sids" not in config.stages or config.stages.index("sids") > config.stages.index("sft"):
        raise ValueError("stage 'sft' needs the 'sids' stage before it in config.stages")
    check_training_config(config.sft, "sft")
    check_data_source(config.data.source, config.data.shards_dir, config.sft.length_buckets)
    check_rl_holdout(config.data)
    if not 0.0 <= config.sft.history_crop <= 1.0:
        raise ValueError(f"sft.history_crop {config.sft.history_crop} must be in [0, 1]")
    if config.sft.history_crop_max_keep < 0:
        raise ValueError(f"sft.history_crop_max_keep {config.sft.history_crop_max_keep} must be "
                         ">= 0 (0 = no cap)")
    options = parse_options(config.model.name, config.model.options)
    generator_nll_weight = config.sft.get("generator_nll_weight", 0.0)
    if generator_nll_weight < 0:
        raise ValueError(f"sft.generator_nll_weight {generator_nll_weight} must be >= 0")
    if generator_nll_weight > 0 and not options.transition_memory_copy:
        raise ValueError("sft.generator_nll_weight > 0 weighs the NLL of a copy head's "
                         "generator part: it needs model.options.transition_memory_copy")
    if config.eval.beam_size < 10:
        raise ValueError(f"eval.beam_size {config.eval.beam_size} must be >= 10 (K of ndcg@10)")
    if config.eval.level_scoring not in LEVEL_SCORINGS:
        raise ValueError(f"eval.level_scoring must be one of {', '.join(LEVEL_SCORINGS)}, got "
                         f"{config.eval.level_scoring!r}")


def training_transition_counts(dataset) -> TransitionCounts:
    """The training transitions a -> b with counts (from the shards' side table on a shard run)."""
    if isinstance(dataset, ShardDataset):
        return dataset.transitions
    from_t, to_t = training_transitions(training_sequences(dataset), dataset.num_items)
    return TransitionCounts.from_pairs(from_t, to_t, dataset.num_items)


def _run(context: RunContext) -> None:
    config, dataset = context.config, context.dataset
    sids, catalog = context.artifacts["sids"], jax.device_put(context.artifacts["catalog"])
    splits = load_splits(dataset, max_history=config.data.max_history,
                         source=config.data.source, shards_dir=config.data.shards_dir)
    model = build_model(
        config.model.name, codes_nl=sids.codes_nl, level_sizes=sids.level_sizes,
        max_history=config.data.max_history, rngs=nnx.Rngs(config.seed),
        **dict(config.model.options),
    )
    if model.transition_memory is not None:
        model.transition_memory.load(training_transition_counts(dataset))
        logging.info("transition memory: %d (item, successor) entries from the training counts",
                     model.transition_memory.num_entries)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    logging.info("generator %s: %.2fM parameters", config.model.name, params / 1e6)
    context.metrics["sft/parameters"] = params

    def evaluate(model, examples):
        rankings = rank_with_generator(
            model, catalog, examples, beam_size=config.eval.beam_size, k=10,
            batch_size=config.eval.batch_size, level_scoring=config.eval.level_scoring,
        )
        return scalar_metrics(ranking_report(rankings, dataset.num_items))

    run_dir = os.path.join(context.workdir, "sft")
    loss_fn = make_sft_loss(config.sft.history_crop, config.sft.history_crop_max_keep,
                            config.sft.get("generator_nll_weight", 0.0))
    outcome = train_supervised(
        model=model, loss_fn=loss_fn, evaluate=evaluate,
        train=sft_examples(splits.train, config.data.rl_holdout),
        valid=subsample(splits.valid, config.eval.valid_users, config.seed),
        config=config.sft, mesh_config=config.mesh, run_dir=run_dir, seed=config.seed,
    )
    test = ranked_test_split(context, splits.test)
    rankings = rank_with_generator(
        outcome.model, catalog, test, beam_size=config.eval.beam_size, k=10,
        batch_size=config.eval.batch_size, level_scoring=config.eval.level_scoring,
    )
    if is_primary_process():
        rankings.save(os.path.join(run_dir, "test_rankings.npz"))
    report = report_test_split(context, rankings, test.history)
    logging.info("test (beam %d, %d users): %s", config.eval.beam_size, report["num_users"],
                 " ".join(f"{k} {v:.4f}" for k, v in report.items()))
    context.artifacts["generator"] = outcome.model
    context.metrics.update(report)
    context.metrics.update({
        "sft/best_step": outcome.best_step, "sft/best_valid_metric": outcome.best_metric,
        "sft/last_step": outcome.last_step, "sft/stopped_early": outcome.stopped_early,
        "sft/train_seconds": outcome.train_seconds,
        "sft/examples_per_s": outcome.examples_per_second(config.sft.batch_size),
        "eval/beam_size": config.eval.beam_size,
        "eval/level_scoring": config.eval.level_scoring,
    })


STAGE = Stage(run=_run, check=_check)
