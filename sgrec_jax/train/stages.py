"""Registers the pipeline stages (import for its side effect)."""

from sgrec_jax.train import sasrec_stage, sft_stage, sid_stage  # noqa: F401
