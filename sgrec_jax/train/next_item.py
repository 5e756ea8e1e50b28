"""The supervised next-item loss of a SID generator, shared by SFT and the RL NLL anchor.

One function, so the "sft" stage (`stages.sft.make_sft_loss`) and the RL loss's anchor on the
logged target (`rl.grpo.policy_loss`, `rl.nll_weight`) score a target the same way: the
cross-entropy of each level's code under the full softmax over the level's padded vocabulary
(padded codes carry the model's NEG_INF logits, so they take no mass), not the catalog-constrained
softmax that decoding uses.
"""

from __future__ import annotations

import jax
import optax


def next_item_nll(logits_xlv: jax.Array, codes_xl: jax.Array) -> jax.Array:
    """float32 [..., L] per-level NLL -log softmax(logits)[code] of teacher-forced target SIDs.

    Args:
      logits_xlv: float [..., L, V] teacher-forced logits of the target SIDs (level l conditioned
        on the target's codes < l).
      codes_xl: int [..., L] the target SIDs.
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits_xlv, codes_xl)
