"""The options of the "psj" reward channel with their defaults (judge/psj_channel.py says what
each does).

Plain data without JAX, so experiment configs can list them (config.rl.channel_options.psj);
sgrec_jax/registration.py registers the channel with them.
"""

PSJ_OPTIONS = {
    "evidence": "features",
    "aggregator": "grpo",
    "negatives": ("random", "nearest"),
    "group_size": 16,
    "num_batches": 300,
    "distill_batches": 600,
    "dim": None,
    "evidence_store": "",
}
