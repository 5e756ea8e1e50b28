"""Semantic IDs for Amazon 2014 Beauty (P5 format) from its real titles and categories.

    python -m experiments.train --config=experiments/configs/beauty_sids.py:rq_kmeans --workdir=...

Arg: "rq_kmeans" (default), "rq_vae", "letter_index" (LETTER's precomputed 4-level index,
`letter_sid_index.json` in the data folder, deduplicated like the others), or
"rq_kmeans_minilm" (balanced RQ-KMeans on 384-d all-MiniLM-L6-v2 sentence embeddings instead of
128-d TF-IDF ones; needs the packages of requirements.txt, no network).
"""

import os

from experiments.configs.common import base_config, data_root, real_data_sids


def get_config(arg: str = "rq_kmeans"):
    config = base_config()
    config.data.format = "p5"
    config.data.dir = os.path.join(data_root(), "amazon2014_beauty")
    real_data_sids(config, arg or "rq_kmeans", "letter_index", "letter_sid_index.json")
    return config
