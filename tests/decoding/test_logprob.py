import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.decoding.logprob import (
    constrained_entropy,
    constrained_logprob,
    masked_log_softmax,
    path_masks,
    sequence_logprob,
)
from tests.decoding.toy import SIDS, B, HashModel, histories, reference_logprobs


@pytest.fixture(scope="module")
def scored(catalog):
    """Teacher-forced logits [B, N, L, V] of every catalog item for B requests."""
    model = HashModel.create(SIDS.level_sizes, SIDS.codes_nl.shape[0])
    memory = _encode(model, *histories(B, SIDS.codes_nl.shape[0]))
    codes_bnl = jnp.broadcast_to(jnp.asarray(SIDS.codes_nl), (B, *SIDS.codes_nl.shape))
    return model, memory, codes_bnl, _sequence_logits(model, memory, codes_bnl)


# Everything runs jitted: eager mode compiles each small op separately, far slower on CPU.
_encode = jax.jit(lambda model, history, mask: model.encode(history, mask))
_sequence_logits = jax.jit(lambda model, memory, codes: model.sequence_logits(memory, codes))
_logprob = jax.jit(constrained_logprob)
_entropy = jax.jit(constrained_entropy)
_path_masks = jax.jit(path_masks)


def test_matches_brute_force_and_sums_to_one(catalog, scored):
    _, _, codes_bnl, logits_bnlv = scored
    logprob_bn, token_bnl = map(np.asarray, _logprob(logits_bnlv, codes_bnl, catalog))
    want_bn, want_entropy_bnl = reference_logprobs(SIDS.codes_nl, np.asarray(logits_bnlv))
    np.testing.assert_allclose(logprob_bn, want_bn, atol=1e-4)
    np.testing.assert_allclose(token_bnl.sum(-1), logprob_bn, atol=1e-5)
    # Every request's distribution over the whole catalog is normalised.
    np.testing.assert_allclose(np.exp(logprob_bn.astype(np.float64)).sum(1), 1.0, atol=1e-5)
    entropy_bnl = np.asarray(_entropy(logits_bnlv, codes_bnl, catalog))
    np.testing.assert_allclose(entropy_bnl, want_entropy_bnl, atol=1e-4)
    # A level where the prefix has a single child is deterministic.
    single_nl = np.asarray(_path_masks(catalog, codes_bnl)).sum(-1)[0] == 1
    assert single_nl.any() and (~single_nl).any()
    np.testing.assert_allclose(entropy_bnl[:, single_nl], 0.0, atol=1e-6)
    np.testing.assert_allclose(token_bnl[:, single_nl], 0.0, atol=1e-6)


def test_model_version_equals_logits_version(catalog, scored):
    model, memory, codes_bnl, logits_bnlv = scored
    got = jax.jit(sequence_logprob)(model, memory, codes_bnl, catalog)
    want = _logprob(logits_bnlv, codes_bnl, catalog)
    np.testing.assert_array_equal(got.logprob_bk, want.logprob_bk)


def test_off_catalog_sids_get_minus_inf_and_finite_gradients(catalog, scored):
    _, _, codes_bnl, logits_bnlv = scored
    codes = np.array(codes_bnl[:, :4])
    # SID 1 leaves the trie at level 2 (a code no level-2 node of its prefix has), SID 2 is
    # beam-search padding (-1), SID 3 has an out-of-vocabulary code.
    masks = np.asarray(_path_masks(catalog, jnp.asarray(codes[:1])))[0]
    codes[:, 1, 2] = np.flatnonzero(~masks[1, 2, : SIDS.level_sizes[2]])[0]
    codes[:, 2] = -1
    codes[:, 3, 0] = 99
    codes = jnp.asarray(codes)

    def finite_sum(logits):
        lp = constrained_logprob(logits, codes, catalog)
        ent = constrained_entropy(logits, codes, catalog)
        return jnp.where(jnp.isfinite(lp.logprob_bk), lp.logprob_bk, 0.0).sum() + ent.sum()

    logprob_bk, token_bkl = _logprob(logits_bnlv[:, :4], codes, catalog)
    assert np.isfinite(logprob_bk[:, 0]).all()
    assert np.isneginf(logprob_bk[:, 1:]).all()
    assert np.isfinite(token_bkl[:, 1, :2]).all() and np.isneginf(token_bkl[:, 1, 2:]).all()
    grad = jax.jit(jax.grad(finite_sum))(logits_bnlv[:, :4])
    assert np.isfinite(grad).all()
    assert np.abs(grad[:, 0]).sum() > 0


def test_masked_log_softmax_of_an_empty_row_is_minus_inf_without_nan():
    logits = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mask = jnp.array([[True, False, True], [False, False, False]])
    logp = jax.jit(masked_log_softmax)(logits, mask)
    lse = np.log(np.e + np.e**3)
    np.testing.assert_allclose(logp[0], [1 - lse, -np.inf, 3 - lse], rtol=1e-6)
    assert np.isneginf(logp[1]).all()
    grad = jax.jit(jax.grad(lambda x: jnp.where(mask, masked_log_softmax(x, mask), 0.0).sum()))(
        logits
    )
    assert np.isfinite(grad).all()


def test_rejects_logits_of_the_wrong_width(catalog, scored):
    _, _, codes_bnl, logits_bnlv = scored
    with pytest.raises(ValueError, match="vocabulary"):
        constrained_logprob(logits_bnlv[..., :-1], codes_bnl, catalog)
