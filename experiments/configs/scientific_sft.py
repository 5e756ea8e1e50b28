"""TIGER-class generator on Amazon 2018 Scientific (LETTER format), about 1 h on 2 CPU cores.

    python -m experiments.train --config=experiments/configs/scientific_sft.py --workdir=DIR

Arg selects the SIDs: "rq_kmeans" (default: balanced RQ-KMeans 3 x 256 on the TF-IDF text
embeddings, built here from the item text), "rq_vae" or "rq_kmeans_minilm" (scientific_sids.py),
or "zcr_index" (CollisionGenRec's 4-level RQ-VAE index shipped with the data, no collisions).
The model is beauty_sft.py's (4+4-layer encoder-decoder, d 128, item-level history tokens,
transition memory and copy head). Scientific has 33,541 training examples, 131 steps of 256 per
epoch: 2,400 steps are about 18 epochs (Beauty's 7,000 are 14), validated every ~3 epochs. At the
~0.5-0.9 steps/s measured here a validation (2,000 users, beam 20) costs 45-60 s and the test
(8,317 users) about 2 min.
"""

from experiments.configs import scientific_sids
from experiments.configs.common import tiger_sft


def get_config(arg: str = "rq_kmeans"):
    config = scientific_sids.get_config(arg or "rq_kmeans")
    tiger_sft(config, num_steps=2_400, warmup_steps=250, eval_every=400, patience=3)
    return config
