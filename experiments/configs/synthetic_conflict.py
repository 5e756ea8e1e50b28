"""The reward-mixing ablation on the synthetic world, rewarded by its ground truth, at one
conflict level: which scheme lands closest to the true Pareto front.

    for c in 0 0.5 1; do
      python -m experiments.ablation --config=experiments/configs/synthetic_conflict.py:$c \
          --workdir=workdirs/conflict_$c --seeds=0 \
          --schemes=sft,single,adv_sum,a2po,popo_light,popo --sweep=0,0.25,0.5,0.75,1
    done

Arg: the world's conflict c in [0, 1] (default 0.5). It only changes bids and item quality, so
the true business value (bid x true CTR) and the true relevance agree at c = 0 and pull apart
at c = 1 (sgrec_jax/data/synthetic.py). The RL channels are those two ground truths
(true_business as the business channel, true_relevance as the semantic one), so the ablation
measures the mixing schemes, not the reward models; learned pCTR tracks the choice logs, which
do not depend on c. ablation.md's ground-truth section scores every row against the oracle front
(the best top-10 lists of any recommender, rewards/truth.py): "front gap" 0 is on it.
"""

from experiments.configs import quickstart_rl

BUSINESS, SEMANTIC = "true_business", "true_relevance"


def get_config(arg: str = "0.5"):
    try:
        conflict = float(arg or "0.5")
    except ValueError:
        raise ValueError(f"synthetic_conflict: the arg is the conflict level, a number in "
                         f"[0, 1]; got {arg!r}") from None
    if not 0.0 <= conflict <= 1.0:
        raise ValueError(f"synthetic_conflict: conflict must be in [0, 1], got {arg!r}")
    config = quickstart_rl.get_config("a2po")
    config.data.options.conflict = conflict
    config.rl.update(channels=(BUSINESS, SEMANTIC), semantic_eval_channel=SEMANTIC)
    options = config.rl.estimator_options
    options.single.channel = BUSINESS
    options.a2po.update(business=BUSINESS, semantic=SEMANTIC)
    return config
