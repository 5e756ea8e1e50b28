"""Registers the pipeline stages (import for its side effect)."""

from sgrec_jax.train import sid_stage  # noqa: F401
