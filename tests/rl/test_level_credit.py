"""Per-level credit of a candidate's advantage (rl/level_credit.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.rl.level_credit import level_advantage, prefix_tree_credit

# One group of five candidates over three levels; the last is beam padding (item -1), whose
# advantage (100) must not reach any mean.
CODES_GL = [[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, -1, -1]]
ITEMS_G = [7, 8, 9, 10, -1]
ADV_G = [3.0, 1.0, -1.0, -1.0, 100.0]
# By hand. Group mean over the four items: (3 + 1 - 1 - 1) / 4 = 0.5.
# Level 0: V(0) = (3 + 1 - 1) / 3 = 1, V(1) = -1.
# Level 1: V(0,0) = (3 + 1) / 2 = 2, V(0,1) = -1, V(1,0) = -1.
# Level 2: each candidate's own advantage.
WANT_GL = [
    [1 - 0.5, 2 - 1, 3 - 2],  # 0.5, 1, 1: sums to 3 - 0.5
    [1 - 0.5, 2 - 1, 1 - 2],  # 0.5, 1, -1: sums to 1 - 0.5
    [1 - 0.5, -1 - 1, -1 - (-1)],  # 0.5, -2, 0
    [-1 - 0.5, -1 - (-1), -1 - (-1)],  # -1.5, 0, 0: no sibling at levels 1 and 2
    [0.0, 0.0, 0.0],  # padding
]


def test_prefix_tree_credit_by_hand():
    codes = jnp.asarray([CODES_GL], jnp.int32)
    items = jnp.asarray([ITEMS_G], jnp.int32)
    got = level_advantage("prefix_tree", jnp.asarray([ADV_G]), codes, items)
    np.testing.assert_allclose(got[0], WANT_GL, rtol=1e-6)
    # A second request in the batch with sampled duplicates: a twice-drawn item counts twice.
    codes2 = jnp.asarray([CODES_GL, [[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 1]]])
    adv2 = jnp.asarray([ADV_G, [2.0, 2.0, 0.0, -1.0, 2.0]])
    got2 = prefix_tree_credit(adv2, codes2, jnp.asarray([ITEMS_G, [1, 1, 2, 3, 4]]) >= 0)
    np.testing.assert_allclose(got2[0], WANT_GL, rtol=1e-6)
    # mean 1; level 0: V(0) = 4/3, V(1) = 1/2; level 1: V(0,0) = 2, V(0,1) = 0, V(1,0) = 1/2.
    np.testing.assert_allclose(got2[1], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0],
                                         [1 / 3, -4 / 3, 0], [-1 / 2, 0, -3 / 2],
                                         [-1 / 2, 0, 3 / 2]], rtol=1e-6, atol=1e-7)


def test_item_credit_gives_every_level_the_candidate_advantage():
    adv = jnp.asarray([ADV_G])
    got = level_advantage("item", adv, jnp.asarray([CODES_GL]), jnp.asarray([ITEMS_G]))
    assert got.shape == (1, 5, 1)
    np.testing.assert_array_equal(got[..., 0], adv)
    with pytest.raises(ValueError, match="is not one of item, prefix_tree"):
        level_advantage("token", adv, jnp.asarray([CODES_GL]), jnp.asarray([ITEMS_G]))


def test_prefix_tree_credit_telescopes_to_the_advantage_minus_the_group_mean():
    b, g, levels = 6, 16, 4
    codes = jax.random.randint(jax.random.key(0), (b, g, levels), 0, 3)  # many shared prefixes
    valid = jax.random.uniform(jax.random.key(1), (b, g)) < 0.85
    # A function of the item, as rewards are: a candidate drawn twice has one advantage.
    item = (codes * 3 ** jnp.arange(levels)).sum(-1)
    adv = jax.random.normal(jax.random.key(2), (b, 3**levels))[jnp.arange(b)[:, None], item]
    assert (np.asarray(item)[:, :, None] == np.asarray(item)[:, None, :]).sum() > b * g
    credit = np.asarray(prefix_tree_credit(adv, codes, valid))
    valid, adv = np.asarray(valid), np.asarray(adv)
    mean = (adv * valid).sum(1, keepdims=True) / valid.sum(1, keepdims=True)
    np.testing.assert_allclose(credit.sum(-1)[valid], (adv - mean)[valid], atol=1e-5)
    assert (credit[~valid] == 0).all()
    # Per level, the credit of a prefix's candidates sums to 0 over the codes below it: with
    # every candidate valid, each level's credits sum to 0 over the group.
    full = np.asarray(prefix_tree_credit(adv, codes, np.ones((b, g), bool)))
    np.testing.assert_allclose(full.sum(1), 0.0, atol=1e-5)


def test_a_nan_advantage_keeps_the_request_non_finite():
    adv = jnp.asarray([[1.0, jnp.nan, 0.0, 2.0, 0.0]])
    got = prefix_tree_credit(adv, jnp.asarray([CODES_GL]), jnp.asarray([ITEMS_G]) >= 0)
    assert not np.isfinite(np.asarray(got[0, :4])).any()
