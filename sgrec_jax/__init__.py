"""sgrec_jax: semantic-aware generative recommendation aligned by reinforcement learning.

Layers (each imports only from the ones before it):
core -> data -> embeddings -> sid -> models -> decoding -> evaluation -> train -> rewards ->
judge -> rl -> stages -> serving. `sgrec_jax.registration` registers every named implementation
(datasets, embeddings, quantizers, models, reward channels, estimators, stages); entry points
import it first.
"""

__version__ = "0.1.0"
