"""Product-of-experts rerank (sgrec_jax/evaluation/fusion.py): exact candidate log-probs against
beam search, the lam = 0 and large-lam limits, candidate union, lam selection."""

import jax
import numpy as np
import pytest

from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.decoding.beam_search import constrained_beam_search_jit
from sgrec_jax.evaluation.fusion import (
    candidate_logprobs,
    candidate_union,
    check_lambdas,
    counting_candidates,
    fused_ranking,
    fused_scores,
    select_lambda,
    transition_scores,
)
from sgrec_jax.models.counting import ItemTransition
from sgrec_jax.serving.recommender import pack_histories
from sgrec_jax.sid.build import semantic_ids_from_codes
from tests.models.tiny import tiny_over

NUM_ITEMS, H, BEAM = 40, 5, 12
# Few codes per level: shared prefixes, and items the beam cuts off while a sibling survives.
SIDS = semantic_ids_from_codes(np.random.default_rng(0).integers(0, 4, (NUM_ITEMS, 3)), (4, 4, 4))
REQUESTS = [[1, 2, 3], [4], [], list(range(12)), [39, 0], [7, 7, 8]]


@pytest.fixture(scope="module")
def model():
    return tiny_over(SIDS, H)


@pytest.fixture(scope="module")
def catalog():
    return jax.device_put(SIDS.catalog())


@pytest.fixture(scope="module")
def history():
    return pack_histories(REQUESTS, max_history=H, num_items=NUM_ITEMS)[0]


def beam(model, catalog, history, level_scoring="renormalized"):
    result = constrained_beam_search_jit(model, catalog, history, history != PAD_ITEM,
                                         beam_size=BEAM, level_scoring=level_scoring)
    return jax.device_get(result)


@pytest.mark.parametrize("level_scoring", ["renormalized", "full_softmax"])
def test_exact_logprobs_of_beam_items_equal_the_beam_scores(model, catalog, history,
                                                            level_scoring):
    result = beam(model, catalog, history, level_scoring)
    assert (result.items_bk >= 0).all()
    # Batches of 4 over 6 rows: a padded last batch.
    logp = candidate_logprobs(model, catalog, SIDS.codes_nl, history, result.items_bk,
                              batch_size=4, level_scoring=level_scoring)
    np.testing.assert_allclose(logp, result.logprob_bk, rtol=1e-5, atol=1e-5)
    # Reversed candidate order, with padding between: the same values, -inf at the padding.
    shuffled = np.insert(result.items_bk[:, ::-1], 3, PAD_ITEM, axis=1)
    again = candidate_logprobs(model, catalog, SIDS.codes_nl, history, shuffled, batch_size=8,
                               level_scoring=level_scoring)
    assert np.isneginf(again[:, 3]).all()
    np.testing.assert_allclose(np.delete(again, 3, axis=1), logp[:, ::-1], rtol=1e-5, atol=1e-5)


def test_exact_logprobs_are_a_distribution_over_the_catalog(model, catalog, history):
    everything = np.tile(np.arange(NUM_ITEMS), (len(history), 1))
    logp = candidate_logprobs(model, catalog, SIDS.codes_nl, history, everything, batch_size=8)
    assert np.isfinite(logp).all()
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, rtol=1e-4)
    # With full_softmax the mass on codes that lead to no item is lost: strictly less than 1.
    lost = candidate_logprobs(model, catalog, SIDS.codes_nl, history, everything, batch_size=8,
                              level_scoring="full_softmax")
    assert (np.exp(lost).sum(1) < 0.999).all()


def counting_model():
    # Transitions seen in "training": 3 -> 5 (x3), 3 -> 9 (x2), 3 -> 17, 0 -> 30.
    sequences = [np.array(s) for s in ([3, 5], [3, 5], [3, 5], [3, 9], [3, 9], [3, 17], [0, 30])]
    return ItemTransition.fit(sequences, NUM_ITEMS, weights=(1.0,))


def test_counting_candidates_are_the_positive_scores_in_count_order(history):
    items = counting_candidates(counting_model(), history, 4)
    np.testing.assert_array_equal(items[0], [5, 9, 17, PAD_ITEM])  # history ends with 3
    np.testing.assert_array_equal(items[4], [30, PAD_ITEM, PAD_ITEM, PAD_ITEM])  # ends with 0
    assert (items[[1, 2, 3, 5]] == PAD_ITEM).all()  # no counts: no popularity fill
    assert counting_candidates(counting_model(), history, 0).shape == (len(history), 0)
    with pytest.raises(ValueError, match="counting candidates must be >= 0"):
        counting_candidates(counting_model(), history, -1)


def test_candidate_union_keeps_beam_order_then_new_counting_items():
    beam_items = np.array([[4, 2, 7], [1, PAD_ITEM, PAD_ITEM]])
    count_items = np.array([[2, 9, PAD_ITEM, PAD_ITEM], [5, 1, 6, PAD_ITEM]])
    np.testing.assert_array_equal(candidate_union(beam_items, count_items), [
        [4, 2, 7, 9, -1, -1, -1],
        [1, 5, 6, -1, -1, -1, -1],
    ])


def test_transition_scores_read_the_weighted_counts(history):
    counting = counting_model()
    items = np.array([[5, 9, 17, 30, PAD_ITEM]] * len(history))
    scores = transition_scores(counting.scores(history), items)
    np.testing.assert_array_equal(scores[0], [3, 2, 1, 0, 0])
    np.testing.assert_array_equal(scores[4], [0, 0, 0, 1, 0])


def union_candidates(model, catalog, history, counting):
    result = beam(model, catalog, history)
    items = candidate_union(result.items_bk, counting_candidates(counting, history, 10))
    logp = candidate_logprobs(model, catalog, SIDS.codes_nl, history, items, batch_size=8)
    return result, items, logp, transition_scores(counting.scores(history), items)


def test_lam_zero_is_the_generator_reranked_exactly(model, catalog, history):
    counting = counting_model()
    result, items, logp, counts = union_candidates(model, catalog, history, counting)
    # Row 0 gains counting items the beam missed (its history ends with 3).
    assert (items[0] >= 0).sum() > BEAM
    ranked, scores = fused_ranking(items, logp, counts, 0.0, k=10)
    order = np.argsort(-logp, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ranked, np.take_along_axis(items, order, 1))
    np.testing.assert_allclose(scores, np.take_along_axis(logp, order, 1), rtol=1e-6)
    for row in range(len(history)):
        in_beam = [item for item in ranked[row] if item in result.items_bk[row]]
        np.testing.assert_array_equal(in_beam, result.items_bk[row][: len(in_beam)])
    # Without counting candidates the lam = 0 top 10 is the beam's own top 10.
    alone, _ = fused_ranking(result.items_bk, logp[:, :BEAM], counts[:, :BEAM], 0.0, k=10)
    np.testing.assert_array_equal(alone, result.items_bk[:, :10])


def test_a_large_lam_puts_counted_items_first_in_count_order(model, catalog, history):
    _, items, logp, counts = union_candidates(model, catalog, history, counting_model())
    ranked, _ = fused_ranking(items, logp, counts, 1e6, k=10)
    np.testing.assert_array_equal(ranked[0, :3], [5, 9, 17])
    assert ranked[4, 0] == 30
    # After the counted items come the others, by generator log-prob.
    rest = [i for i in ranked[0, 3:]]
    others = items[0][(counts[0] == 0) & (items[0] >= 0)]
    expected = others[np.argsort(-logp[0][np.isin(items[0], others)], kind="stable")][:7]
    np.testing.assert_array_equal(rest, expected)


def test_short_rows_are_padded_like_beam_search():
    items = np.array([[3, 1, PAD_ITEM], [PAD_ITEM, PAD_ITEM, PAD_ITEM]])
    logp = np.array([[-2.0, -1.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    ranked, scores = fused_ranking(items, logp, np.zeros((2, 3)), 1.0, k=4)
    np.testing.assert_array_equal(ranked, [[1, 3, -1, -1], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(scores[0], np.array([-1, -2, -np.inf, -np.inf], np.float32))


def test_fused_score_is_logp_plus_lam_log1p_count():
    score = fused_scores(np.array([[-1.0, -2.0]]), np.array([[0.0, 3.0]]), 0.5)
    np.testing.assert_allclose(score, [[-1.0, -2.0 + 0.5 * np.log(4.0)]])


def test_select_lambda_takes_the_validation_best_and_the_smaller_on_ties():
    curve = {0.0: {"ndcg@10": 0.10, "recall@10": 0.30}, 0.5: {"ndcg@10": 0.12, "recall@10": 0.2},
             1.0: {"ndcg@10": 0.11, "recall@10": 0.40}}
    assert select_lambda(curve) == 0.5
    assert select_lambda(curve, "recall@10") == 1.0
    assert select_lambda({2.0: {"ndcg@10": 0.2}, 1.0: {"ndcg@10": 0.2}}) == 1.0
    with pytest.raises(ValueError, match="has no 'ndcg@5'"):
        select_lambda(curve, "ndcg@5")


@pytest.mark.parametrize("lams, message", [
    ([], "empty"), ([0, -0.5], "finite number >= 0, got -0.5"), ([1, float("nan")], "got nan"),
    ([1, 1.0], "repeats"),
])
def test_bad_lambdas_are_refused(lams, message):
    with pytest.raises(ValueError, match=message):
        check_lambdas(lams)
    if lams and all(np.isfinite(lams)) and min(lams) < 0:
        with pytest.raises(ValueError, match="finite number >= 0"):
            fused_scores(np.zeros((1, 1)), np.zeros((1, 1)), min(lams))
