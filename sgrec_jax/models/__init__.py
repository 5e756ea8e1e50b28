"""Models: the SID generators (Flax NNX; history in, the next item's semantic-ID codes out),
SASRec and the counting floors.

`models.registry.build_model` builds a generator variant by name; models/defaults.py lists every
model's options without JAX. sgrec_jax/registration.py registers the variants.
"""
