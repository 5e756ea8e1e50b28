"""Quickstart: the embedded synthetic world, end to end on a laptop CPU in minutes.

    python -m experiments.train --config=experiments/configs/quickstart.py \
        --workdir=workdirs/quickstart

No download: the world is generated from its seed (sgrec_jax/data/synthetic.py). Pass
`quickstart.py:rq_vae` to build the SIDs with the RQ-VAE instead of RQ-KMeans.
"""

from experiments.configs.common import base_config, set_quantizer


def get_config(arg: str = "rq_kmeans"):
    config = base_config()
    config.data.format = "synthetic"
    config.data.options.num_items = 2000
    config.data.options.num_users = 1000
    config.data.options.conflict = 0.5
    config.sid.levels = 3
    config.sid.codebook_size = 64
    config.sid.embeddings.source = "text"
    config.sid.embeddings.dim = 64
    config.sid.embeddings.options.vocab_size = 1000
    config.stages = ("sids", "sft")
    config.model.options.update(num_layers=2, d_model=64, num_heads=4, d_ff=256)
    config.sft.batch_size = 128
    config.sft.num_steps = 600
    config.sft.warmup_steps = 50
    config.sft.eval_every = 200
    config.sft.log_every = 50
    config.eval.valid_users = 500
    set_quantizer(config, arg or "rq_kmeans")
    if config.sid.quantizer == "rq_kmeans":
        # Synthetic titles differ within a topic only by a few words: unbalanced residual
        # k-means puts 55-80% of items on shared SIDs, balanced assignment about 18%.
        config.sid.quantizer_options.balanced = True
    if config.sid.quantizer == "rq_vae":
        config.sid.quantizer_options.epochs = 100
    return config
