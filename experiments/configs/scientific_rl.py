"""RL alignment of the Scientific SFT generator (scientific_sft.py's work directory).

    python -m experiments.train --config=experiments/configs/scientific_rl.py:ARG \
        --workdir=DIR --config.rl.init_workdir=SFT_DIR

SFT_DIR (default workdirs/scientific_sft) is a finished run of scientific_sft.py with its default
SIDs (rq_kmeans, with the transition memory and copy head): its sids.npz and best SFT checkpoint
are the start policy and the frozen KL reference, and its model config must equal this one's (it
is: both come from scientific_sft). rl/ecpm@10 uses the independently trained "ecpm_eval" model
and rl/semantic@10 "emb_cosine", so no evaluation reuses a training reward.

Arg, the advertising setting: the advantage estimator ("a2po", the default, or any ESTIMATORS
name). Rewards: "ecpm" (simulated bids x a SASRec pCTR model trained here) and the PSJ (feature
evidence), both judged on every request (`--config.rl.semantic_sample_ratio=0.05` for the
paper's sparse judging). 500 rollout batches of 64 requests x 16 beams (the ablation runs
fewer: --config.rl.num_steps).

Arg "rank_<estimator>", the public-data setup of both papers' baselines: MiniOneRec's ranking
reward "rank" is the business channel and the PSJ the semantic one. "rank_single": GRPO on
"rank" alone (MiniOneRec); "rank_a2po": A2PO anchored on "rank" with "psj" (S-GRec);
"rank_adv_sum", "rank_popo" (or any other estimator): both channels mixed by that estimator.
Length: MiniOneRec's, about 2 epochs of requests: ceil(2 x 33,541 training examples / 64) =
1,049 rollout batches, 5% of them warmup, validated about 10 times (with data.rl_holdout the
requests are fewer: scale rl.num_steps).
"""

import math

from experiments.configs import scientific_sft

TRAIN_EXAMPLES = 33_541  # Scientific's leave-one-out training examples (scientific_sft.py).
RANK_PREFIX = "rank_"
RANK_EPOCHS = 2.0  # MiniOneRec's RL length in passes over the training requests.


def rl_steps(train_examples: int, batch_size: int, epochs: float = RANK_EPOCHS) -> int:
    """Rollout batches of `batch_size` requests that pass `epochs` times over the requests."""
    return math.ceil(epochs * train_examples / batch_size)


def rl_alignment(config, arg: str, *, init_workdir: str, train_examples: int) -> None:
    """The RL stage of a public dataset's config (module docstring): the advertising setting for
    an estimator name, the ranking setup for "rank_<estimator>" (train_examples sizes its
    length)."""
    config.stages = ("rl",)
    config.rl.update(
        init_workdir=init_workdir, semantic_eval_channel="emb_cosine", group_size=16,
        batch_size=64, learning_rate=5e-5, log_every=10, eval_every=100,
    )
    if not arg.startswith(RANK_PREFIX):
        config.rl.update(channels=("ecpm", "psj"), estimator=arg or "a2po", num_steps=500,
                         warmup_steps=25)
        return
    estimator = arg[len(RANK_PREFIX):]
    num_steps = rl_steps(train_examples, config.rl.batch_size)
    # About 10 validations (2,000 users, beam 20: about a minute each on 2 CPU cores).
    config.rl.update(estimator=estimator, num_steps=num_steps, warmup_steps=num_steps // 20,
                     eval_every=100 * max(1, round(num_steps / 1000)),
                     channels=("rank",) if estimator == "single" else ("rank", "psj"))
    config.rl.estimator_options.single.channel = "rank"
    config.rl.estimator_options.a2po.update(business="rank", semantic="psj")


def get_config(arg: str = "a2po"):
    config = scientific_sft.get_config()
    rl_alignment(config, arg, init_workdir="workdirs/scientific_sft",
                 train_examples=TRAIN_EXAMPLES)
    # pCTR models with BCE on 4 uniform negatives overfit quickly on Scientific's 33k training
    # examples: early stopping on validation AUC, strong dropout (test AUC ~0.75 for both).
    config.rl.channel_options.ecpm.update(
        architecture="sasrec", dropout=0.5, learning_rate=3e-3, ctr_steps=2000, eval_every=500,
        patience=2,
    )
    config.rl.channel_options.ecpm_eval.update(
        architecture="mean_pool", dropout=0.3, weight_decay=0.05, learning_rate=3e-3,
        ctr_steps=4000, eval_every=1000, patience=2,
    )
    return config
