"""The Taiji semantic channel "emb_cosine": cos(text embedding of candidate, of target).

Range [-1, 1] (1 for the target itself). Needs the items' text: embeddings come from
`RewardSetup.text_embeddings` (unit-norm, cached under workdir/rewards/). Options: text_source
("text" TF-IDF/LSA or "sentence_encoder", a pretrained model such as all-MiniLM-L6-v2; None = the
SIDs' source when it is one of those, else "text") and dim (None = the SIDs' width when the
source is theirs, else 64 for "text" and the model's width for "sentence_encoder").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from sgrec_jax.rewards.channel import (
    RewardChannel,
    RewardRequests,
    RewardSetup,
    nan_where_padding,
    safe_items,
)


def _emb_cosine_score(emb_nd: jax.Array, requests: RewardRequests, items_bg: jax.Array,
                      logprob_bg: jax.Array) -> jax.Array:
    del logprob_bg
    target_bd = emb_nd[requests.target_b]
    cos_bg = jnp.einsum("bgd,bd->bg", emb_nd[safe_items(items_bg)], target_bd)
    return nan_where_padding(jnp.clip(cos_bg, -1.0, 1.0), items_bg)


def build_emb_cosine(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    emb_nd = jnp.asarray(setup.text_embeddings(dim=options["dim"], source=options["text_source"]))
    return RewardChannel("emb_cosine", -1.0, 1.0, "semantic", emb_nd, _emb_cosine_score)
