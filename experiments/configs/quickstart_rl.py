"""Quickstart RL: SIDs, SFT, then RL alignment on a small synthetic world, a few minutes on CPU.

    python -m experiments.train --config=experiments/configs/quickstart_rl.py \
        --workdir=workdirs/quickstart_rl

Arg: the advantage estimator ("a2po", the default; or "adv_sum", "popo", any ESTIMATORS name).
Rewards: "ecpm" (simulated bids x a SASRec pCTR model trained here) as the business channel and
"emb_cosine" (text-embedding similarity to the logged next item) as the semantic one; the world
has conflict 0.5, so the two disagree often. The results add rl/* to the SFT's metrics, among
them the ground-truth rl/true_business@10 and rl/true_relevance@10 of the synthetic world.
"""

from experiments.configs import quickstart


def get_config(arg: str = "a2po"):
    config = quickstart.get_config("rq_kmeans")
    config.stages = ("sids", "sft", "rl")
    config.data.options.update(num_items=1000, num_users=500)
    config.sft.update(num_steps=300, eval_every=150)
    config.eval.valid_users = 200
    for ctr in ("ecpm", "ecpm_eval"):  # pCTR models of the reward and of the evaluation
        config.rl.channel_options[ctr].update(ctr_steps=600, eval_every=200)
    config.rl.update(
        channels=("ecpm", "emb_cosine"), estimator=arg or "a2po", group_size=8, batch_size=32,
        num_steps=60, learning_rate=1e-4, warmup_steps=5, log_every=5, eval_every=30,
        semantic_eval_channel="emb_cosine",
    )
    return config
