"""TIGER-class generator on Amazon 2018 Scientific (LETTER format), about 1 h on 2 CPU cores.

    python -m experiments.train --config=experiments/configs/scientific_sft.py --workdir=DIR

Arg selects the SIDs: "zcr_index" (default: CollisionGenRec's 4-level RQ-VAE index shipped with
the data, no collisions), or "rq_kmeans" / "rq_vae" / "rq_kmeans_minilm" (scientific_sids.py)
built here from the item text. The model is beauty_sft.py's (4+4-layer encoder-decoder, d 128,
item-level history tokens). Scientific has 33,541 training examples, 131 steps of 256 per epoch:
2,400 steps are about 18 epochs (Beauty's 7,000 are 14), validated every ~3 epochs. At the
~0.5-0.8 steps/s measured here a validation (2,000 users, beam 20) costs 45-60 s and the test
(8,317 users) about 2 min.
"""

from experiments.configs import scientific_sids
from experiments.configs.common import tiger_sft


def get_config(arg: str = "zcr_index"):
    config = scientific_sids.get_config(arg or "zcr_index")
    tiger_sft(config, num_steps=2_400, warmup_steps=250, eval_every=400, patience=3)
    return config
