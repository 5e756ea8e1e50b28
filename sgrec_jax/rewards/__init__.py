"""Reward channels: business (hit, rank, ecpm), semantic (emb_cosine) and synthetic ground truth.

channel.py holds the interface, the registry and the reward tensor; rewards/defaults.py the
channels' options. sgrec_jax/registration.py registers every channel (the "psj" channel lives
in the judge package).
"""
