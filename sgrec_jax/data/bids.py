"""Simulated advertiser bids for public datasets, which carry no price or bid signal.

Bids are i.i.d. lognormal per item: bid_i = exp(mu + sigma * z_i), z_i ~ N(0, 1), drawn from
`numpy.random.default_rng(seed)` in item-index order. They are independent of popularity and of
item text, so any correlation a model finds between bids and relevance is its own doing. The
median bid is exp(mu) and the mean exp(mu + sigma^2 / 2).
"""

from __future__ import annotations

import numpy as np


def simulate_bids(
    num_items: int, seed: int, *, mu: float = 0.0, sigma: float = 0.5
) -> tuple[np.ndarray, str]:
    """Returns (bids float32 [num_items], description for `Items.bid_source`)."""
    if num_items < 0:
        raise ValueError(f"num_items must be >= 0, got {num_items}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    bids = rng.lognormal(mean=mu, sigma=sigma, size=num_items).astype(np.float32)
    description = f"simulated bids: lognormal(mu={mu}, sigma={sigma}) i.i.d. per item, seed {seed}"
    return bids, description
