"""Registers the pipeline stages (import for its side effect)."""

from sgrec_jax.stages import baselines, rl, sasrec, sft, sids  # noqa: F401
