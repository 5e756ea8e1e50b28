"""The eCPM channels: 1000 * bid(i) * pCTR(x, i) (algorithms.md section 2).

"ecpm" is the business reward; "ecpm_eval" has the same formula with an independently trained
pCTR model (another seed and, by default, another architecture), used only to evaluate eCPM@10,
so RL cannot score its own exam. Range [0, 1000 * max bid]. Needs bids (`dataset.items.bids`: the
world's own on the synthetic world; elsewhere seeded simulated bids, see `items.bid_source`) and
the logged sequences to train pCTR (ctr_model.py; cached under workdir/rewards/<name>_seed<k>/).
Options: those of ctr_model.CtrOptions (defaults in rewards/defaults.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sgrec_jax.rewards.channel import (
    RewardChannel,
    RewardRequests,
    RewardSetup,
    nan_where_padding,
    safe_items,
)
from sgrec_jax.rewards.ctr_model import CtrModel, build_ctr_model, pctr_bg

ECPM_SCALE = 1000.0  # eCPM is revenue per thousand impressions.


def _ecpm_score(graphdef: nnx.GraphDef, tables: Mapping[str, Any], requests: RewardRequests,
                items_bg: jax.Array, logprob_bg: jax.Array) -> jax.Array:
    del logprob_bg
    items = safe_items(items_bg)
    p_bg = pctr_bg(graphdef, tables["model"], tables["scale"], tables["bias"],
                   requests.history_bh, requests.history_mask_bh, items)
    return nan_where_padding(ECPM_SCALE * tables["bids_n"][items] * p_bg, items_bg)


def ecpm_from_model(name: str, ctr: CtrModel, bids_n: np.ndarray) -> RewardChannel:
    """The eCPM channel `name` of a trained pCTR model and per-item bids [N]."""
    tables = {"model": ctr.state, "scale": jnp.float32(ctr.scale), "bias": jnp.float32(ctr.bias),
              "bids_n": jnp.asarray(bids_n, jnp.float32)}
    high = ECPM_SCALE * float(np.max(bids_n))
    return RewardChannel(name, 0.0, high, "business", tables,
                         functools.partial(_ecpm_score, ctr.graphdef))


def ecpm_channel(setup: RewardSetup, name: str, options: Mapping[str, Any]) -> RewardChannel:
    """The eCPM channel `name` over the pCTR model that `options` describe (trained or cached)."""
    return ecpm_from_model(name, build_ctr_model(setup, name, options), setup.dataset.items.bids)


def build_ecpm(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    return ecpm_channel(setup, "ecpm", options)


def build_ecpm_eval(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    return ecpm_channel(setup, "ecpm_eval", options)
