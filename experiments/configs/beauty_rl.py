"""RL alignment of the Beauty SFT generator (beauty_sft.py's work directory): scientific_rl.py's
settings and args on Amazon 2014 Beauty.

    python -m experiments.train --config=experiments/configs/beauty_rl.py:ARG \
        --workdir=DIR --config.rl.init_workdir=SFT_DIR

SFT_DIR (default workdirs/beauty_sft) is a finished run of beauty_sft.py with its default SIDs
(rq_kmeans, with the transition memory and copy head), whose model config equals this one's. Arg
as in scientific_rl.py: an estimator name ("a2po", the default) for the advertising setting
(rewards "ecpm" and "psj", 500 rollout batches of 64 requests x 16 beams), or "rank_<estimator>"
("rank_single", "rank_a2po", "rank_adv_sum", "rank_popo") for the public-data setup on
MiniOneRec's "rank" reward (with "psj" as the semantic channel but for "rank_single"), about 2
epochs of requests: ceil(2 x 131,413 training examples / 64) = 4,107 rollout batches, validated
every 400. The pCTR models (ecpm, and ecpm_eval behind rl/ecpm@10) keep their defaults, which were
not tuned on Beauty (Scientific's were, against overfitting its 4x smaller training split).
"""

from experiments.configs import beauty_sft
from experiments.configs.scientific_rl import rl_alignment

TRAIN_EXAMPLES = 131_413  # Beauty's leave-one-out training examples (sgrec_jax/data/split.py).


def get_config(arg: str = "a2po"):
    config = beauty_sft.get_config()
    rl_alignment(config, arg, init_workdir="workdirs/beauty_sft", train_examples=TRAIN_EXAMPLES)
    return config
