"""Training-time augmentation of histories (jittable; the evaluation protocol is untouched).

`crop_histories` keeps only a random suffix of some histories. The diagnostics on Scientific show
why: the generator recovers only 53% of the targets that follow the user's last item somewhere in
training (the counting floor: 86%), although it sees every such pair as a training example. In
training, the pair a -> b always comes with the rest of that user's history, which a model can
memorise as a whole instead of learning "after a comes b" for everyone; a test user who ends in a
has another history. Cropping trains on (recent suffix -> target) too, as CL4SRec's crop
augmentation does for SASRec. `max_keep` caps the kept length: max_keep = 1 trains the cropped
share on (last item -> target) alone, the transition the counting floor scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def crop_histories(
    history_mask_bh: jax.Array, rng: jax.Array, prob: float, max_keep: int = 0
) -> jax.Array:
    """bool [B, H]: with probability `prob` per example, only its last k real items stay real,
    k uniform in 1..min(length, max_keep) (max_keep 0: no cap); other examples keep their mask.
    Histories are right-aligned (the newest item in column H-1), so a suffix is the last k
    columns."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"crop probability must be in [0, 1], got {prob}")
    if max_keep < 0:
        raise ValueError(f"crop max_keep must be >= 0 (0 = no cap), got {max_keep}")
    if prob == 0.0:
        return history_mask_bh
    h = history_mask_bh.shape[1]
    crop_key, length_key = jax.random.split(rng)
    length_b = history_mask_bh.sum(axis=1)
    if max_keep:
        length_b = jnp.minimum(length_b, max_keep)
    keep_b = jax.random.randint(length_key, length_b.shape, 1, jnp.maximum(length_b, 1) + 1)
    suffix_bh = jnp.arange(h)[None, :] >= h - keep_b[:, None]
    cropped_b = jax.random.bernoulli(crop_key, prob, length_b.shape)
    return jnp.where(cropped_b[:, None], history_mask_bh & suffix_bh, history_mask_bh)
