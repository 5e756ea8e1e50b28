"""The options of every reward channel of this package with their defaults.

Plain data without JAX, so experiment configs can list them (config.rl.channel_options);
sgrec_jax/registration.py registers each channel builder with its entry here. The "psj"
channel's options live with it, in judge/defaults.py.
"""

# The pCTR model behind the eCPM channels: the fields of rewards.ctr_model.CtrOptions, which
# documents them (tests keep the two equal).
CTR_OPTIONS = {
    "architecture": "sasrec",
    "d_model": 64,
    "num_layers": 2,
    "num_heads": 2,
    "dropout": 0.2,
    "num_negatives": 4,
    "ctr_steps": 2000,
    "batch_size": 256,
    "learning_rate": 1e-3,
    "warmup_steps": 100,
    "weight_decay": 0.0,
    "eval_every": 500,
    "patience": 3,
    "valid_examples": 2000,
    "seed_offset": 0,
}

CHANNEL_OPTIONS = {
    "hit": {},
    "rank": {},
    "ecpm": CTR_OPTIONS,
    # The independent evaluation model: the other architecture, its own seed.
    "ecpm_eval": {**CTR_OPTIONS, "architecture": "mean_pool", "seed_offset": 1000},
    # Item-text embeddings (rewards/semantic.py): text_source "text" | "sentence_encoder" | None
    # (= the config's SID embedding source when it is a text one); dim None = that source's width.
    "emb_cosine": {"dim": None, "text_source": None},
    "true_ctr": {},
    "true_business": {},
    "true_relevance": {},
}
