import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.decoding.beam_search import constrained_beam_search_jit
from tests.decoding.toy import (
    ENCODE_CALLS,
    SIDS,
    B,
    HashModel,
    N,
    PathModel,
    all_item_logits,
    histories,
    reference_logprobs,
)


@pytest.fixture(scope="module")
def brute_force(model, requests):
    """Log-prob [B, N] of every catalog item, by enumeration."""
    logits = np.asarray(all_item_logits(model, *requests, SIDS.codes_nl))
    return reference_logprobs(SIDS.codes_nl, logits)[0]


def test_exact_when_the_beam_holds_every_prefix(catalog, model, requests, brute_force):
    ranking = np.argsort(-brute_force, axis=1, kind="stable")
    # A beam as wide as the widest non-leaf level keeps every prefix of length < L: exact.
    widest = max(catalog.num_nodes[1:-1])
    assert widest < N
    top5 = constrained_beam_search_jit(model, catalog, *requests, beam_size=widest, num_return=5)
    np.testing.assert_array_equal(top5.items_bk, ranking[:, :5])
    np.testing.assert_allclose(
        top5.logprob_bk, np.take_along_axis(brute_force, ranking[:, :5], 1), atol=1e-4
    )


def test_beam_wider_than_the_catalog_ranks_everything_and_pads(catalog, model, requests,
                                                               brute_force):
    result = constrained_beam_search_jit(model, catalog, *requests, beam_size=N + 4)
    ranking = np.argsort(-brute_force, axis=1, kind="stable")
    np.testing.assert_array_equal(result.items_bk[:, :N], ranking)
    np.testing.assert_allclose(
        result.logprob_bk[:, :N], np.take_along_axis(brute_force, ranking, 1), atol=1e-4
    )
    np.testing.assert_array_equal(result.codes_bkl[:, :N], SIDS.codes_nl[ranking])
    np.testing.assert_array_equal(result.items_bk[:, N:], -1)
    np.testing.assert_array_equal(result.codes_bkl[:, N:], -1)
    assert np.isneginf(result.logprob_bk[:, N:]).all()
    # The whole catalog is ranked, and its probabilities sum to 1.
    np.testing.assert_allclose(np.exp(np.asarray(result.logprob_bk, np.float64)).sum(1), 1, 1e-5)


def test_small_beam_gives_valid_sorted_distinct_items(catalog, model, requests, brute_force):
    result = constrained_beam_search_jit(model, catalog, *requests, beam_size=4)
    items, codes, logprob = map(np.asarray, result[:3])
    assert items.shape == (B, 4) and codes.shape == (B, 4, SIDS.num_levels)
    assert (items >= 0).all() and all(len(set(row)) == 4 for row in items.tolist())
    np.testing.assert_array_equal(codes, SIDS.codes_nl[items])
    assert (np.diff(logprob, axis=1) < 0).all()
    np.testing.assert_allclose(logprob, np.take_along_axis(brute_force, items, 1), atol=1e-4)
    # A small beam may miss the best items, but never beats them.
    assert (logprob[:, 0] <= brute_force.max(1) + 1e-5).all()


def test_flags_an_invalid_unconstrained_argmax(catalog):
    codes = SIDS.codes_nl
    siblings = codes[(codes[:, :2] == codes[7, :2]).all(1), 2]
    off_level2 = next(c for c in range(SIDS.level_sizes[2]) if c not in siblings)
    sid_set = {tuple(row) for row in codes.tolist()}
    off_dedup = next(
        (*row[:3], d) for row in codes.tolist() for d in range(SIDS.level_sizes[3])
        if (*row[:3], d) not in sid_set
    )
    targets = np.array(
        [
            codes[7],  # a catalog SID
            [*codes[7, :2], off_level2, 0],  # leaves the trie at level 2
            off_dedup,  # valid prefix, but no item with this dedup code
            codes[12],
        ],
        np.int32,
    )
    path_model = PathModel(jnp.asarray(targets), SIDS.level_sizes)
    history = jnp.arange(4, dtype=jnp.int32)[:, None]
    mask = jnp.ones((4, 1), bool)
    result = constrained_beam_search_jit(path_model, catalog, history, mask, beam_size=2)
    np.testing.assert_array_equal(result.argmax_invalid_b, [False, True, True, False])
    # Where the preferred SID exists, the constrained search finds it first.
    np.testing.assert_array_equal(result.items_bk[[0, 3], 0], [7, 12])


def test_no_retrace_for_new_inputs_of_the_same_shape(catalog, model):
    before = ENCODE_CALLS[0]
    constrained_beam_search_jit(model, catalog, *histories(2, N, seed=5), beam_size=4)
    assert ENCODE_CALLS[0] == before + 1  # batch size 2 is new: one trace
    other_model = HashModel.create(SIDS.level_sizes, N, seed=3)
    a = constrained_beam_search_jit(model, catalog, *histories(2, N, seed=6), beam_size=4)
    b = constrained_beam_search_jit(other_model, catalog, *histories(2, N, seed=6), beam_size=4)
    assert ENCODE_CALLS[0] == before + 1
    assert not np.array_equal(a.logprob_bk, b.logprob_bk)


def test_rejects_a_bad_num_return(catalog, model, requests):
    with pytest.raises(ValueError, match="num_return"):
        constrained_beam_search_jit(model, catalog, *requests, beam_size=3, num_return=4)


def test_full_softmax_level_scoring_sums_unrenormalised_level_log_probs(catalog, model,
                                                                         requests):
    """With level_scoring="full_softmax" an item scores the sum over levels of its code's
    log-softmax over the level's whole codebook (mass on codes leading nowhere is lost), and a
    beam holding every prefix ranks exactly by that sum, which differs from the renormalised
    ranking on this catalog."""
    logits = np.asarray(all_item_logits(model, *requests, SIDS.codes_nl))  # [B, N, L, V]
    codes = SIDS.codes_nl
    sizes = np.array(SIDS.level_sizes)
    valid = np.arange(logits.shape[-1])[None, :] < sizes[:, None]  # [L, V]
    shifted = np.where(valid, logits, -np.inf)
    log_z = np.log(np.exp(shifted - shifted.max(-1, keepdims=True)).sum(-1)) + shifted.max(-1)
    chosen = np.take_along_axis(logits, codes[None, :, :, None], axis=-1)[..., 0]
    full = (chosen - log_z).sum(-1)  # [B, N]
    ranking = np.argsort(-full, axis=1, kind="stable")
    widest = max(catalog.num_nodes[1:-1])
    result = constrained_beam_search_jit(model, catalog, *requests, beam_size=widest,
                                         num_return=5, level_scoring="full_softmax")
    np.testing.assert_array_equal(result.items_bk, ranking[:, :5])
    np.testing.assert_allclose(result.logprob_bk, np.take_along_axis(full, ranking[:, :5], 1),
                               atol=1e-4)
    renormalised = constrained_beam_search_jit(model, catalog, *requests, beam_size=widest,
                                               num_return=5)
    assert not np.array_equal(renormalised.items_bk, result.items_bk)
    with pytest.raises(ValueError, match="level_scoring"):
        constrained_beam_search_jit(model, catalog, *requests, beam_size=5, level_scoring="x")
