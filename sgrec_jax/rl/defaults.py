"""The options of every advantage estimator with their defaults (algorithms.md section 4).

Plain data without JAX, so experiment configs can list them (config.rl.estimator_options);
sgrec_jax/registration.py registers each estimator of rl/estimators.py with its entry here,
and its class docstring says what each option does.
"""

# Every estimator mixes through pallas_advantage.mixed_advantage: "xla" or "pallas" (the same
# math), and the Pallas kernel's block of requests.
MIX_OPTIONS = {"impl": "xla", "block_b": 8}

ESTIMATOR_OPTIONS = {
    "single": {"channel": None, **MIX_OPTIONS},
    "weighted_sum": {"weights": None, **MIX_OPTIONS},
    "adv_sum": {"weights": None, **MIX_OPTIONS},
    "gdpo": {"weights": None, **MIX_OPTIONS},
    "a2po": {"business": "ecpm", "semantic": None, **MIX_OPTIONS},
    "popo_light": {"w_min": 0.05, "ema": 0.0, "mix_space": "mapped", **MIX_OPTIONS},
    "popo": {"eta": 0.1, "mu": "norm", "w_min": 0.05, "mix_space": "mapped", **MIX_OPTIONS},
    "mgda": {"solver": "auto", "fw_steps": 100, **MIX_OPTIONS},
}
