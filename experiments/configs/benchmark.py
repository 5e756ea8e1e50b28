r"""The speed benchmark's sizes (`python -m experiments.benchmark`; sgrec_jax/benchmarks/ says
what each section measures).

    get_config()         the documented figures' sizes (Beauty-sized catalog, TIGER-sized model)
    get_config("quick")  tiny sizes: every section in seconds (the benchmark's test)

Every field can be overridden on the command line, e.g. `--config.sections=sft,beam` or
`--config.d_ff=1024`; a tuple of strings also takes comma-separated text.
"""

from ml_collections import ConfigDict

ALL_SECTIONS = (
    "matmul", "sft", "buckets", "rl", "beam", "catalog", "pallas", "scaling", "profile",
)


def get_config(arg: str = "") -> ConfigDict:
    if arg not in ("", "quick"):
        raise ValueError(f"benchmark config arg must be '' or 'quick', got {arg!r}")
    config = ConfigDict({
        "sections": ALL_SECTIONS,  # Run in the order given.
        "seed": 0,  # Seeds the synthetic catalogs, models and requests.
        "matmul_size": 2048,  # n of the n x n float32 matmuls.
        "matmul_repeats": 10,  # Matmuls timed; the best counts.
        "num_items": 12_101,  # Catalog size (Beauty: 12,101).
        "codebook_size": 256,  # Codes per SID level.
        "levels": 3,  # SID levels before the dedup level.
        "num_layers": 4,  # Blocks per stack (encoder and decoder).
        "d_model": 128,
        "num_heads": 4,
        "head_dim": 0,  # Width of each head; 0 = d_model // num_heads.
        "d_ff": 512,  # MLP width.
        "dtype": "float32",  # Compute dtype ("bfloat16" on GPU/TPU); parameters stay float32.
        "history": 20,  # Items per history (max_history).
        "history_encodings": ("item", "code"),  # Encodings to measure.
        "train_batch": 256,  # SFT batch size.
        "train_steps": 10,  # Timed (sft) or traced (profile) train steps, after a warm-up.
        "length_buckets": (5, 10),  # Bucket widths (buckets section).
        "mean_history": 6.7,  # Mean history length (buckets section).
        "decode_batch": 128,  # Requests per beam-search call.
        "beam_sizes": (20, 50),  # Beam widths to measure.
        "k": 10,  # Items returned per request (<= every beam width).
        "decode_repeats": 5,  # Timed calls; the best counts.
        "rl_batch": 64,  # Requests per RL step.
        "rl_group": 16,  # Candidates G per request.
        "rl_rollout": "beam",  # How candidates are drawn: "beam" or "sample".
        "rl_steps": 5,  # Timed RL steps (after a warm-up).
        "catalog_sizes": (10_000, 1_000_000, 10_000_000),  # Catalogs of the catalog section.
        "pallas_batch": 256,  # Requests B of the advantage mix.
        "pallas_group": 16,  # Group size G of the advantage mix.
        "pallas_channels": 2,  # Reward channels K.
        "pallas_block_b": 8,  # Requests per Pallas grid block.
        "pallas_repeats": 20,  # Timed calls; the median counts.
        "scaling_devices": (1, 2, 4, 8),  # Device counts of the scaling section.
    })
    if arg == "quick":
        config.update({
            "matmul_size": 256, "matmul_repeats": 3, "num_items": 300, "codebook_size": 8,
            "num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64, "history": 5,
            "history_encodings": ("item",), "train_batch": 16, "train_steps": 2,
            "decode_batch": 8, "length_buckets": (2,), "mean_history": 2.0,
            "beam_sizes": (10,), "decode_repeats": 1, "rl_batch": 8, "rl_group": 4,
            "rl_steps": 1, "catalog_sizes": (300, 3000), "pallas_batch": 16, "pallas_group": 4,
            "pallas_repeats": 2, "scaling_devices": (1, 2),
        })
    return config
