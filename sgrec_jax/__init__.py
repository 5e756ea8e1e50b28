"""sgrec_jax: semantic-aware generative recommendation aligned by reinforcement learning.

Layers (each imports only from the ones before it):
core -> data -> embeddings -> sid -> models -> decoding -> rewards -> rl -> train.
"""

__version__ = "0.1.0"
