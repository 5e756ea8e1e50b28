"""The options of the "psj" reward channel with their defaults (judge/psj_channel.py says what
each does), and the settings of a stage-1 judging run (judge/run.py).

Plain data without JAX, so experiment configs can list them (config.rl.channel_options.psj,
config.judge); sgrec_jax/registration.py registers the channel with them.
"""

# The folder under a work directory where stage 1 writes its evidence and stage 2 reads it.
JUDGE_DIR = "judge"

PSJ_OPTIONS = {
    "evidence": "features",
    "aggregator": "grpo",
    "negatives": ("random", "nearest"),
    "group_size": 16,
    "num_batches": 300,
    "distill_batches": 600,
    "dim": None,
    "text_source": None,  # Item-text embeddings as emb_cosine's (rewards/semantic.py).
    "evidence_store": "",
}

# The settings of a stage-1 judging run (config.judge; sgrec_jax/stages/judge.py runs it).
JUDGE_OPTIONS = {
    "backend": "features",  # "features" (aspect features of the text) or "llm".
    "sample_ratio": 0.05,  # Fraction of the training requests judged (at least one).
    "candidates": "target,negatives:4",  # Per request: the target and/or N unseen items.
    "log_negatives": False,  # Also one negative per stage-2 kind (random, nearest, popular).
    "batch_size": 256,  # features: requests per jitted batch.
    "base_url": "",  # llm: OpenAI-compatible base URL (.../v1).
    "model": "",  # llm: the served model's name.
    "api_key_env": "OPENAI_API_KEY",  # llm: NAME of the environment variable with the key.
    "concurrency": 8,  # llm: requests in flight at most.
    "max_requests": 0,  # llm: HTTP request budget; 0 = none.
    "max_seconds": 0.0,  # llm: wall-time budget in seconds; 0 = none.
    # llm: how the answer schema is sent: "json_schema" (OpenAI, llama.cpp, vLLM, SGLang),
    # "json_object_schema" (llama-cpp-python), "json_object" (no schema) or "none".
    "response_format": "json_schema",
    "timeout_s": 60.0,  # llm: per-request timeout in seconds.
    "max_attempts": 4,  # llm: attempts per pair.
    "max_tokens": 256,  # llm: answer length cap in tokens.
    "retry_failed": False,  # llm: ask again for stored failures.
    "dry_run": False,  # llm: print the estimate and send nothing.
}
