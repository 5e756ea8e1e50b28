"""The "rl" stage: align the SFT generator with reward channels by a GRPO-family update.

Starts from the generator of the "sft" stage in this pipeline, or else from the best SFT
checkpoint of `config.rl.init_workdir` (its sids.npz and sft/checkpoints, trained with the same
config.data.rl_holdout), and trains it on leave-one-out training requests (only those held out
of SFT when config.data.rl_holdout is set, data/holdout.py) with `rl.training.train_rl`
(GRPO-family updates rewarded by the configured channels and advantage estimator; semantic
channels judge only a seeded `semantic_sample_ratio` of the requests). Checkpoints go to
DIR/rl/checkpoints and a rerun resumes; metrics to DIR/rl (TensorBoard, metrics.jsonl, progress
log).

At the end the policy (the final one, or with rl.best_metric the best on validation among the
start policy and the validated steps: rl/best_step) ranks the test split by beam search
(config.eval.beam_size); results: rl/recall@5, rl/ndcg@5, rl/recall@10, rl/ndcg@10 (and
rl/recall@20, rl/ndcg@20 when eval.beam_size >= 20), rl/valid_rate, rl/coverage@10, the
ranking diagnostics the SFT stage reports (rl/diag/..., sgrec_jax/evaluation/diagnostics.py),
rl/ecpm@10 ("ecpm_eval": a pCTR model trained independently of the reward's, simulated bids),
rl/semantic@10 (rl.semantic_eval_channel), rl/true_business@10 and rl/true_relevance@10 on the
synthetic world (each: the mean over users of the mean over their top 10), rl/sign_agreement
(business/semantic sign agreement averaged over training steps), rl/best_step,
rl/best_valid_metric, rl/stopped_early, and the ranked lists in DIR/rl/test_rankings.npz.
rl.num_steps = 0 evaluates the start policy (the SFT row).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.distributed import is_primary_process
from sgrec_jax.core.files import as_path, read_json, write_json
from sgrec_jax.core.sharding import make_mesh
from sgrec_jax.data.holdout import check_rl_holdout, rl_requests
from sgrec_jax.data.sources import load_splits
from sgrec_jax.data.split import leave_one_out
from sgrec_jax.models.registry import build_model
from sgrec_jax.rewards.channel import REWARD_CHANNELS, RewardSetup, build_channels
from sgrec_jax.rewards.truth import oracle_front
from sgrec_jax.rl.candidate_weighting import CANDIDATE_WEIGHTINGS
from sgrec_jax.rl.estimators import ESTIMATORS
from sgrec_jax.rl.evaluation import (
    EVAL_BUSINESS,
    TOP_K,
    TRUTH_AT_10,
    evaluate_policy,
    save_test_rewards,
    selectable_metrics,
    test_rewards,
)
from sgrec_jax.rl.grpo import KL_DIRECTIONS, KL_ESTIMATORS
from sgrec_jax.rl.level_credit import LEVEL_CREDITS
from sgrec_jax.rl.request_mix import REQUEST_MIXES, mix_requests
from sgrec_jax.rl.rollout import ROLLOUT_MODES
from sgrec_jax.rl.training import train_rl
from sgrec_jax.sid.build import SemanticIds, load_semantic_ids
from sgrec_jax.stages.pipeline import CONFIG_FILE, RunContext, Stage, load_configured_dataset
from sgrec_jax.stages.reports import ranked_test_split, training_statistics
from sgrec_jax.train.checkpointing import Checkpointer
from sgrec_jax.train.evaluate import Rankings, subsample
from sgrec_jax.train.train_state import create_train_state, make_optimizer

TEST_REWARDS_FILE = "test_rewards.npz"  # In DIR/rl/: per-user rewards of the test rankings.
TRUE_FRONT_FILE = "true_front.json"  # In DIR/rl/ on the synthetic world (rewards/truth.py).
TRUE_FRONT_WEIGHTS = np.linspace(0.0, 1.0, 41)  # Business weights of the oracle scalarisations.


# -- config ------------------------------------------------------------------------------------

def _check(config: ConfigDict) -> None:
    rl, stages = config.rl, list(config.stages)
    if "sft" in stages:
        if stages.index("sft") > stages.index("rl"):
            raise ValueError("stage 'rl' must come after 'sft' in config.stages")
    elif not rl.init_workdir:
        raise ValueError("stage 'rl' needs the 'sft' stage before it or rl.init_workdir (an SFT "
                         "work directory)")
    for name in [*rl.channels, rl.semantic_eval_channel, EVAL_BUSINESS]:
        REWARD_CHANNELS.resolve(name, rl.channel_options.get(name))  # unknown names or options
    ESTIMATORS.resolve(rl.estimator, rl.estimator_options.get(rl.estimator))
    problems = []
    if rl.group_size < 2 or min(rl.batch_size, rl.updates_per_batch) < 1:
        problems.append("need group_size >= 2, batch_size >= 1, updates_per_batch >= 1")
    if rl.num_steps < 0 or (rl.num_steps and not 0 <= rl.warmup_steps < rl.num_steps):
        problems.append(f"need num_steps >= 0 and 0 <= warmup_steps {rl.warmup_steps} < "
                        f"num_steps {rl.num_steps}")
    if rl.learning_rate <= 0 or rl.clip_eps <= 0 or rl.beta < 0 or rl.temperature <= 0:
        problems.append("need learning_rate > 0, clip_eps > 0, beta >= 0, temperature > 0")
    if rl.pg_weight < 0 or rl.nll_weight < 0 or rl.pg_weight + rl.nll_weight == 0:
        problems.append(f"need pg_weight >= 0 and nll_weight >= 0, not both 0 (got "
                        f"{rl.pg_weight}, {rl.nll_weight})")
    if rl.nll_learning_rate < 0 or (rl.nll_learning_rate > 0 and not rl.nll_weight > 0):
        problems.append(f"nll_learning_rate {rl.nll_learning_rate} must be >= 0, and 0 unless "
                        f"nll_weight > 0 (got {rl.nll_weight}): it is the NLL anchor's own")
    for field, allowed in (("rollout", ROLLOUT_MODES), ("kl_estimator", KL_ESTIMATORS),
                           ("kl_direction", KL_DIRECTIONS), ("level_credit", LEVEL_CREDITS),
                           ("request_mix", REQUEST_MIXES),
                           ("candidate_weighting", CANDIDATE_WEIGHTINGS)):
        if rl[field] not in allowed:
            problems.append(f"{field} {rl[field]!r} is not one of {', '.join(allowed)}")
    if not 0 <= rl.semantic_sample_ratio <= 1:
        problems.append(f"semantic_sample_ratio {rl.semantic_sample_ratio} must be in [0, 1]")
    if min(rl.log_every, rl.eval_every, rl.keep_checkpoints) < 1 or rl.max_steps_per_run < 0:
        problems.append("need log_every, eval_every, keep_checkpoints >= 1, max_steps_per_run >= 0")
    if rl.best_metric and rl.best_metric not in selectable_metrics(config):
        problems.append(f"best_metric {rl.best_metric!r} is not a validation metric: one of "
                        f"{', '.join(selectable_metrics(config))} (or '' for the final policy)")
    if rl.patience < 0 or (rl.patience and not rl.best_metric):
        problems.append(f"patience {rl.patience} must be >= 0, and 0 without a best_metric")
    if config.eval.beam_size < TOP_K:
        problems.append(f"eval.beam_size {config.eval.beam_size} must be >= {TOP_K}")
    if problems:
        raise ValueError("rl: " + "; ".join(problems))
    if config.data.source != "memory":
        raise ValueError(f"stage 'rl' needs data.source 'memory', got {config.data.source!r}: "
                         "its reward models read every user's sequence (the pCTR models' "
                         "training split, the synthetic world's truth tables). Train sids and "
                         "sft from the shards, then run rl with data.source 'memory' and "
                         "rl.init_workdir set to that work directory")
    check_rl_holdout(config.data)


# -- the start policy ---------------------------------------------------------------------------

def sft_start_policy(config: ConfigDict, num_items: int) -> tuple[SemanticIds, nnx.Module]:
    """The SIDs and the best SFT checkpoint of the work directory config.rl.init_workdir."""
    init = as_path(config.rl.init_workdir)
    sids = load_semantic_ids(init, num_items)
    checkpoints = init / "sft" / "checkpoints"
    if sids is None or not checkpoints.is_dir():
        raise ValueError(f"rl.init_workdir {init} is not an SFT work directory (it needs "
                         "sids.npz and sft/checkpoints)")
    saved_config = read_json(init / CONFIG_FILE)
    if saved_config is not None:
        saved_model = saved_config["model"]
        if saved_model != json.loads(json.dumps(config.model.to_dict())):
            raise ValueError(f"config.model differs from the model of {init}: {saved_model}")
        # Runs from before the field trained on every example.
        saved_holdout = saved_config["data"].get("rl_holdout", "none")
        if saved_holdout != config.data.rl_holdout:
            raise ValueError(f"config.data.rl_holdout {config.data.rl_holdout!r} differs from "
                             f"the {saved_holdout!r} the SFT run in {init} was trained with: RL "
                             "requests must be the examples that SFT held out")
    model = build_model(
        config.model.name, codes_nl=sids.codes_nl, level_sizes=sids.level_sizes,
        max_history=config.data.max_history, rngs=nnx.Rngs(config.seed),
        **dict(config.model.options),
    )
    # The restore target needs the SFT optimizer's state structure, not its values.
    optimizer = make_optimizer(config.sft.learning_rate, 0, 1, clip_norm=config.sft.clip_norm)
    mesh = make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp)
    graphdef, target, _ = create_train_state(model, optimizer, jax.random.key(0), mesh)
    with Checkpointer(checkpoints, best_metric=f"valid/{config.sft.best_metric}") as ckpt:
        step = ckpt.best_step()
        if step is None:
            raise ValueError(f"{checkpoints} holds no checkpoint")
        state = ckpt.restore(step, target)
    logging.info("start policy: SFT step %d of %s", step, init)
    return sids, nnx.merge(graphdef, state.params, state.model_state)


def _start_policy(context: RunContext) -> tuple[SemanticIds, nnx.Module]:
    if "generator" in context.artifacts:
        return context.artifacts["sids"], context.artifacts["generator"]
    sids, model = sft_start_policy(context.config, context.dataset.num_items)
    context.artifacts.update(sids=sids, catalog=sids.catalog())
    return sids, model


# -- the stage ----------------------------------------------------------------------------------

def _eval_channel_names(config: ConfigDict, synthetic: bool) -> list[str]:
    names = [EVAL_BUSINESS, config.rl.semantic_eval_channel]
    if synthetic:
        names += [name for name in TRUTH_AT_10 if name not in names]
    return names


def backfill_test_rewards(workdir: str) -> bool:
    """Writes rl/test_rewards.npz of a finished rl run from its saved test rankings (for runs
    made before the rl stage wrote it); False when it exists already.

    Rebuilds the run's data, test split and evaluation channels from its stored config; the
    reward models load from their cache, so the scores are the ones the run reported.
    """
    path = os.path.join(workdir, "rl", TEST_REWARDS_FILE)
    if epath.Path(path).exists():
        return False
    stored = read_json(os.path.join(workdir, CONFIG_FILE))
    if stored is None:
        raise ValueError(f"{workdir}: no {CONFIG_FILE} to rebuild the evaluation from")
    config = ConfigDict(stored)
    rankings = Rankings.load(os.path.join(workdir, "rl", "test_rankings.npz"))
    dataset = load_configured_dataset(config)
    test = leave_one_out(dataset, config.data.max_history).test
    if not np.array_equal(rankings.users_u, test.user):
        raise ValueError(f"{workdir}: the saved test rankings are not of this config's test users")
    rl = config.rl
    rewards_dir = (rl.rewards_workdir or (rl.init_workdir if "sft" not in config.stages else "")
                   or workdir)
    setup = RewardSetup(config=config, dataset=dataset, workdir=as_path(rewards_dir),
                        seed=rl.reward_seed)
    channels = build_channels(setup, _eval_channel_names(config, setup.world() is not None),
                              rl.channel_options)
    save_test_rewards(path, rankings.users_u, test_rewards(config, channels, test, rankings))
    return True


def _rewards_workdir(context: RunContext) -> epath.Path:
    """Where the reward models are trained and cached: rl.rewards_workdir, else the SFT work
    directory the policy starts from, else this one. The rewards are the environment, not part
    of the run: every scheme and seed started from one SFT checkpoint is graded by the same
    reward models (seeded by rl.reward_seed, not by the run's seed), trained once."""
    rl = context.config.rl
    if rl.rewards_workdir:
        return as_path(rl.rewards_workdir)
    if rl.init_workdir and "sft" not in context.config.stages:
        return as_path(rl.init_workdir)
    return context.workdir


def _run(context: RunContext) -> None:
    config, dataset = context.config, context.dataset
    rl = config.rl
    sids, model = _start_policy(context)
    catalog = jax.device_put(sids.catalog())
    if rl.rollout == "beam" and rl.group_size > dataset.num_items:
        raise ValueError(f"rl.group_size {rl.group_size} exceeds the catalog's "
                         f"{dataset.num_items} items (beam rollouts need G distinct items)")
    splits = load_splits(dataset, max_history=config.data.max_history,
                         source=config.data.source, shards_dir=config.data.shards_dir)
    setup = RewardSetup(config=config, dataset=dataset, workdir=_rewards_workdir(context),
                        seed=rl.reward_seed, artifacts=context.artifacts)
    eval_channels = build_channels(setup, _eval_channel_names(config, setup.world() is not None),
                                   rl.channel_options)
    run_dir = context.workdir / "rl"

    summary: dict[str, Any] = {"rl/last_step": 0, "rl/best_step": 0,
                               "rl/best_valid_metric": math.nan, "rl/stopped_early": False,
                               "rl/nonfinite_steps": 0, "rl/sign_agreement": math.nan}
    if rl.num_steps > 0:
        valid = subsample(splits.valid, config.eval.valid_users, config.seed)
        channels = build_channels(setup, list(rl.channels), rl.channel_options)
        mixed = mix_requests(rl.request_mix, rl_requests(splits.train, config.data.rl_holdout),
                             splits.valid, training_statistics(context))
        logging.info("rl requests: %d training examples (data.rl_holdout %r, rl.request_mix "
                     "%r); targets following the last item: %.4f as drawn, %.4f trained on, "
                     "%.4f of validation targets", len(mixed.requests), config.data.rl_holdout,
                     rl.request_mix, mixed.follows_share_before, mixed.follows_share_after,
                     mixed.follows_share_valid)
        model, summary = train_rl(config, dataset.num_items, model, catalog, channels,
                                  eval_channels, mixed.requests, valid, run_dir)
    test = ranked_test_split(context, splits.test)
    rankings, report, per_user = evaluate_policy(
        model, catalog, test, eval_channels, config, dataset.num_items,
        stats=training_statistics(context), codes_nl=sids.codes_nl,
    )
    front = None
    if setup.world() is not None:
        truth = {c.name: c for c in eval_channels}
        front = oracle_front((truth["true_business"], truth["true_relevance"]), test,
                             dataset.num_items, weights=TRUE_FRONT_WEIGHTS, k=TOP_K,
                             batch_size=config.eval.batch_size)
    if is_primary_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        rankings.save(run_dir / "test_rankings.npz")
        save_test_rewards(run_dir / TEST_REWARDS_FILE, rankings.users_u, per_user)
        if front is not None:
            write_json(run_dir / TRUE_FRONT_FILE, {
                "business_weight": TRUE_FRONT_WEIGHTS.tolist(),
                "true_business@10": front[:, 0].tolist(),
                "true_relevance@10": front[:, 1].tolist(),
            })
    logging.info("rl test (beam %d, %d users): %s", config.eval.beam_size, report["num_users"],
                 " ".join(f"{k} {v:.4f}" for k, v in report.items()))
    context.artifacts["rl_generator"] = model
    context.metrics.update({f"rl/{k}": v for k, v in report.items()})
    context.metrics.update(summary)


STAGE = Stage(run=_run, check=_check)
