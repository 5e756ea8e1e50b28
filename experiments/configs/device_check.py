r"""Sizes of the device check (`bash experiments/device_check.sh --platform=gpu`, which runs
`python -m experiments.device_check --config=experiments/configs/device_check.py:gpu`;
sgrec_jax/benchmarks/device_check.py says what each part measures).

    get_config("gpu")    one GPU, under 8 minutes: TIGER-sized and d_model 512 SFT in float32
                         and bfloat16, beam 50 over 12k and 10M items, RL, the quickstart
    get_config("tpu")    the same sizes on a TPU VM's chips
    get_config("cpu")    small sizes on a CPU, a few minutes (the quickstart part is the same as
                         on a device, so it is compared with the CPU reference)
    get_config("quick")  tiny sizes on a CPU (the test runs it; the quickstart comparison is
                         skipped because its config differs from the reference's)

Every field can be overridden, e.g. `--config.parts=peak,sft --config.sft_models.wide.train_batch=
1024`. `base` holds the fields of the speed benchmark (experiments/configs/benchmark.py) that the
parts start from; `sft_models`, `beam.model` and `rl.model` override some of them.
"""

from ml_collections import ConfigDict

from experiments.configs import benchmark, quickstart

PLATFORMS = ("gpu", "tpu", "cpu", "quick")
PARTS = ("device", "peak", "pallas", "sft", "beam", "rl", "quickstart")

# TIGER (Rajput et al. 2023): 4 + 4 layers, d_model 128, 6 heads of 64, MLP 1024, one history
# token per code (20 items x 4 codes = 80 tokens); its recipe's batch is 256.
TIGER = {"num_layers": 4, "d_model": 128, "num_heads": 6, "head_dim": 64, "d_ff": 1024,
         "history_encodings": ("code",), "train_batch": 256}
# A wider model with a large batch: enough work per step for an accelerator's matmul units.
WIDE = {"num_layers": 4, "d_model": 512, "num_heads": 8, "head_dim": 64, "d_ff": 2048,
        "history_encodings": ("code",), "train_batch": 2048}


def quickstart_experiment() -> ConfigDict:
    """The quickstart (experiments/configs/quickstart.py) with few SFT steps: the same on every
    platform, so a device's metrics can be compared with the CPU reference."""
    config = quickstart.get_config()
    config.sft.update(num_steps=100, warmup_steps=20, eval_every=100, log_every=50)
    config.eval.valid_users = 200
    return config


def get_config(arg: str = "gpu") -> ConfigDict:
    if arg not in PLATFORMS:
        raise ValueError(f"device check config arg must be one of {', '.join(PLATFORMS)}, "
                         f"got {arg!r}")
    base = benchmark.get_config("quick" if arg == "quick" else "")
    base.update(matmul_size=2048, matmul_repeats=3, train_steps=20, decode_repeats=5,
                rl_steps=5)
    config = ConfigDict({
        "platform": "cpu" if arg == "quick" else arg,  # The backend JAX must run on.
        "parts": PARTS,  # Run in this order.
        "seed": 0,
        "peak_matmul_size": 8192,  # n of the n x n matmuls of the peak part.
        "peak_repeats": 10,  # Matmuls timed per dtype; the best counts.
        "pallas": {
            "batch": 4096,  # Requests B.
            "group": 16,  # Candidates G per request (a power of 2 for Triton on GPU).
            "channels": (2, 3),  # Reward channel counts K (3 is padded to 4 in the kernel).
            "block_b": 8,  # Requests per grid block.
            "repeats": 50,  # Timed calls; the median counts.
            "tolerance": 1e-5,  # Largest |kernel - reference| that passes.
        },
        "base": base,
        "sft_models": {"tiger": dict(TIGER), "wide": dict(WIDE)},
        "sft_dtypes": ("float32", "bfloat16"),
        "beam": {
            "model": dict(TIGER),  # The generator that decodes.
            "dtype": "bfloat16",
            "beam_size": 50,
            "decode_batch": 256,  # Requests per call.
            "catalog_sizes": (12_101, 10_000_000),  # Random SIDs, 3 x 256 codes + dedup.
        },
        "rl": {
            "model": dict(TIGER, rl_batch=256, rl_group=16),
            "dtype": "bfloat16",
        },
        "quickstart": quickstart_experiment(),
        # The CPU reference (python -m experiments.device_check --reference_out=...) and the
        # largest |device - reference| per results.json metric (path relative to the repo root).
        # On the CPU, seeds 0-3 of this quickstart spread over 0.011 (recall@10), 0.013
        # (recall@5), 0.014 (ndcg@10), 0.016 (ndcg@5), 0.027 (validation ndcg@10, 200 users),
        # 0.02 (collision rate) and 22 (distinct SIDs): each tolerance is about twice that, so a
        # device run that only rounds differently passes and one that does not learn (recall@10
        # of a random ranking: 0.005 against 0.081) fails.
        "quickstart_reference": "docs/results/device_check_quickstart_cpu.json",
        # What the quickstart's stages (sids, sft) read: the reference counts only where the
        # config agrees with its own at these keys (options added elsewhere do not matter).
        "quickstart_config_keys": ("seed", "stages", "data", "sid", "model", "sft", "eval"),
        "quickstart_tolerances": {
            "recall@5": 0.03, "recall@10": 0.03, "ndcg@5": 0.03, "ndcg@10": 0.03,
            "valid_rate": 0.01, "sft/best_valid_metric": 0.05,
            "sid/collision_rate": 0.04, "sid/num_distinct_sids": 50.0,
        },
    })
    if arg in ("cpu", "quick"):
        small = {"num_layers": 1, "train_batch": 16}
        config.update(peak_matmul_size=1024, peak_repeats=5)
        config.sft_models = ConfigDict({
            "tiger": dict(TIGER, **small),
            "wide": dict(WIDE, **small, d_model=256, num_heads=4, d_ff=1024)})
        config.pallas.update(batch=256, repeats=5)
        config.base.update(train_steps=3, decode_repeats=2, rl_steps=2)
        config.beam.model = ConfigDict(dict(TIGER, **small))
        config.beam.update(dtype="float32", decode_batch=16, catalog_sizes=(12_101, 100_000))
        config.rl.model = ConfigDict(dict(TIGER, **small, rl_batch=8, rl_group=8))
        config.rl.dtype = "float32"
    if arg == "quick":
        tiny = {"num_layers": 1, "d_model": 32, "num_heads": 2, "head_dim": 0, "d_ff": 64,
                "history_encodings": ("item",), "train_batch": 8}
        config.peak_matmul_size = 128
        config.sft_models = ConfigDict({"tiger": tiny})
        config.pallas.update(batch=16, group=4, channels=(3,), repeats=2)
        config.beam.model = ConfigDict(tiny)
        config.beam.update(decode_batch=4, beam_size=10, catalog_sizes=(300, 3000))
        config.rl.model = ConfigDict(dict(tiny, rl_batch=4, rl_group=4))
        config.quickstart.data.options.update(num_items=150, num_users=60)
        config.quickstart.sid.codebook_size = 8
        config.quickstart.sid.embeddings.dim = 16
        config.quickstart.model.options.update(num_layers=1, d_model=32, num_heads=2, d_ff=64)
        config.quickstart.sft.update(batch_size=16, num_steps=8, warmup_steps=2, eval_every=8)
        config.quickstart.eval.update(beam_size=10, batch_size=32, valid_users=20)
    return config
