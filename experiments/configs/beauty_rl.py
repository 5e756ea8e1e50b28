"""RL alignment of the Beauty generator on users its SFT never trained on: scientific_rl.py's
protocol and args on Amazon 2014 Beauty.

    python -m experiments.train --config=experiments/configs/beauty_rl.py:ARG --workdir=DIR

The SIDs, the generator's SFT (beauty_sft.py's recipe) on 90% of the users, then RL on the
13,232 requests of the other 10% for 2 epochs: ceil(2 x 13,232 / 64) = 414 rollout batches of 64
requests x 16 beams, validated 3 times. Arg as in scientific_rl.py: an estimator name ("a2po",
the default) for the advertising setting (rewards "ecpm" and "psj"), or "rank_<estimator>"
("rank_single", "rank_a2po", "rank_adv_sum", "rank_popo") for the public-data setup on
MiniOneRec's "rank" reward (with "psj" as the semantic channel but for "rank_single"). The pCTR
models (ecpm, and ecpm_eval behind rl/ecpm@10) keep their defaults, which were not tuned on
Beauty (Scientific's were, against overfitting its 4x smaller training split).
"""

from experiments.configs import beauty_sft
from experiments.configs.scientific_rl import rl_alignment

TRAIN_EXAMPLES = 131_413  # Beauty's leave-one-out training examples (sgrec_jax/data/split.py).
HOLDOUT_REQUESTS = 13_232  # The held-out users' training examples (scientific_rl.RL_HOLDOUT).


def get_config(arg: str = "a2po"):
    config = beauty_sft.get_config()
    rl_alignment(config, arg, requests=HOLDOUT_REQUESTS)
    return config
