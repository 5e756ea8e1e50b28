"""Semantic IDs for Amazon 2018 Industrial_and_Scientific (LETTER format) from its item text.

    python -m experiments.train \
        --config=experiments/configs/scientific_sids.py:rq_kmeans --workdir=...

Arg: "rq_kmeans" (default), "rq_vae", "zcr_index" (CollisionGenRec's precomputed index,
`rqvae_zcr_sid_index.json` in the data folder), or "rq_kmeans_minilm" (balanced RQ-KMeans on
384-d all-MiniLM-L6-v2 sentence embeddings instead of 128-d TF-IDF ones; needs the packages of
requirements.txt, no network).
"""

import os

from experiments.configs.common import base_config, data_root, real_data_sids


def get_config(arg: str = "rq_kmeans"):
    config = base_config()
    config.data.format = "letter"
    config.data.dir = os.path.join(data_root(), "amazon2018_scientific")
    real_data_sids(config, arg or "rq_kmeans", "zcr_index", "rqvae_zcr_sid_index.json")
    return config
