"""ecpm = 1000 * bid * calibrated pCTR (the build path through the registry and the cache is
tested in test_ctr_model.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from sgrec_jax.rewards.business import ecpm_from_model
from sgrec_jax.rewards.ctr_model import pctr_bg
from tests.rewards.tiny import requests_and_items, score


def test_ecpm_is_bid_times_pctr(tiny_setup, tiny_ctr):
    channel = ecpm_from_model("ecpm", tiny_ctr, tiny_setup.dataset.items.bids)
    requests, items = requests_and_items(tiny_setup)
    out = score(channel, requests, items)
    real = items != -1
    pctr = jax.jit(pctr_bg, static_argnums=0)
    p = np.asarray(pctr(tiny_ctr.graphdef, tiny_ctr.state, tiny_ctr.scale, tiny_ctr.bias,
                        requests.history_bh, requests.history_mask_bh,
                        jnp.asarray(np.where(real, items, 0))))
    bids = tiny_setup.dataset.items.bids
    np.testing.assert_allclose(out[real], (1000 * bids[items] * p)[real], rtol=1e-5)
    assert np.isnan(out[~real]).all()
    assert channel.kind == "business" and channel.low == 0.0
    assert out[real].max() <= channel.high
