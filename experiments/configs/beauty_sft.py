"""Semantic-ID generator on Amazon 2014 Beauty, protocol of benchmarks.md, about 2.5 h on 2 CPU
cores.

    python -m experiments.train --config=experiments/configs/beauty_sft.py \
        --workdir=workdirs/beauty_sft

Arg selects the SIDs: "rq_kmeans" (default: balanced RQ-KMeans 3 x 256 on the TF-IDF text
embeddings, built here from the real titles and categories), "rq_vae" or "rq_kmeans_minilm"
(beauty_sids.py), or "letter_index" (LETTER's 4-level RQ-VAE index shipped with the data, 13
collisions resolved by the dedup level). Encoder-decoder, 4+4 layers, d 128, item-level history
tokens (one per history item, from its code embeddings), which is what makes it trainable on a
CPU, with the transition memory and copy head of common.tiger_sft. Validated on 5,000 users: the
noise of 2,000 (about +-0.004 in N@10) picked a different step than test would.
"""

from experiments.configs import beauty_sids
from experiments.configs.common import tiger_sft


def get_config(arg: str = "rq_kmeans"):
    config = beauty_sids.get_config(arg or "rq_kmeans")
    tiger_sft(config, num_steps=7_000, warmup_steps=1000, eval_every=1000, patience=4)
    config.eval.valid_users = 5000
    return config
