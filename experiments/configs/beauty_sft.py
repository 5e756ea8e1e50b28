"""TIGER-class generator on Amazon 2014 Beauty, protocol of benchmarks.md, about 2 h on 2 CPU cores.

    python -m experiments.train --config=experiments/configs/beauty_sft.py \
        --workdir=workdirs/beauty_sft

Arg selects the SIDs: "letter_index" (default: LETTER's 4-level RQ-VAE index shipped with the
data, 13 collisions resolved by the dedup level), or "rq_kmeans" / "rq_vae" / "rq_kmeans_minilm"
(beauty_sids.py) built here from the real titles and categories. Encoder-decoder, 4+4 layers,
d 128, item-level history tokens (one per history item, from its code embeddings), which is what
makes it trainable on a CPU.
"""

from experiments.configs import beauty_sids
from experiments.configs.common import tiger_sft


def get_config(arg: str = "letter_index"):
    config = beauty_sids.get_config(arg or "letter_index")
    tiger_sft(config, num_steps=7_000, warmup_steps=1000, eval_every=1000, patience=4)
    return config
