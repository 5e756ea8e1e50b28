import jax
import numpy as np
import pytest
from scipy import stats

from sgrec_jax.decoding.beam_search import constrained_beam_search_jit
from sgrec_jax.decoding.sampling import constrained_sample_jit
from tests.decoding.toy import (
    SIDS,
    B,
    all_item_logits,
    reference_logprobs,
)

MANY = 20_000


@pytest.fixture(scope="module")
def item_logits(model, requests):
    return np.asarray(all_item_logits(model, *requests, SIDS.codes_nl))


def _chi2_pvalue(items_g: np.ndarray, p_n: np.ndarray) -> float:
    """Pearson chi-square p-value of samples against p_n, pooling items expected < 5 times."""
    observed = np.bincount(items_g, minlength=len(p_n)).astype(float)
    expected = p_n * len(items_g)
    rare = expected < 5
    observed = np.append(observed[~rare], observed[rare].sum())
    expected = np.append(expected[~rare], expected[rare].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    return stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_frequencies_follow_the_constrained_policy(catalog, model, requests, item_logits,
                                                   temperature):
    result = constrained_sample_jit(
        model, catalog, *requests, jax.random.key(0), num_samples=MANY, temperature=temperature
    )
    items, codes, logprob = map(np.asarray, result)
    assert items.shape == (B, MANY) and (items >= 0).all()
    np.testing.assert_array_equal(codes, SIDS.codes_nl[items])
    # The reported log-prob is the policy's (temperature 1) whatever the temperature.
    policy_bn = reference_logprobs(SIDS.codes_nl, item_logits)[0]
    np.testing.assert_allclose(logprob, np.take_along_axis(policy_bn, items, 1), atol=1e-4)
    # Frequencies follow the constrained softmax of logits / temperature.
    tempered_bn = reference_logprobs(SIDS.codes_nl, item_logits / temperature)[0]
    for b in range(B):
        p_n = np.exp(tempered_bn[b])
        assert _chi2_pvalue(items[b], p_n / p_n.sum()) > 1e-4
        assert len(np.unique(items[b])) > 1  # samples do repeat and do vary


def test_low_temperature_gives_the_greedy_beam(catalog, model, requests):
    greedy = constrained_beam_search_jit(model, catalog, *requests, beam_size=1)
    cold = constrained_sample_jit(
        model, catalog, *requests, jax.random.key(1), num_samples=16, temperature=1e-4
    )
    np.testing.assert_array_equal(cold.items_bg, np.repeat(greedy.items_bk, 16, axis=1))
    np.testing.assert_allclose(cold.logprob_bg, np.repeat(greedy.logprob_bk, 16, axis=1),
                               atol=1e-5)


def test_same_key_same_samples(catalog, model, requests):
    def draw(seed):
        return constrained_sample_jit(
            model, catalog, *requests, jax.random.key(seed), num_samples=MANY, temperature=1.0
        ).items_bg  # the shapes of the frequency test: no new compile

    np.testing.assert_array_equal(draw(3), draw(3))
    assert not np.array_equal(draw(3), draw(4))


@pytest.mark.parametrize("options", [dict(num_samples=4, temperature=0.0),
                                     dict(num_samples=0, temperature=1.0)])
def test_rejects_bad_options(catalog, model, requests, options):
    with pytest.raises(ValueError):
        constrained_sample_jit(model, catalog, *requests, jax.random.key(0), **options)
