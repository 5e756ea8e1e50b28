"""The degenerate-judge check: identical scores across a request's candidates are flagged (with a
WARNING), a judge that tells candidates apart is not, and unjudged candidates are left out."""

import logging

import numpy as np
import pytest

from sgrec_jax.judge.spread import score_spread, warn_if_degenerate

NAN = np.nan


def test_identical_scores_for_every_candidate_are_degenerate(caplog):
    same = np.tile(np.array([0.8, 0.6, 0.4], np.float32), (5, 4, 1))  # 5 requests x 4 candidates
    figures = score_spread(same)
    assert figures["requests_compared"] == 5
    assert figures["std_over_candidates"] == [0.0, 0.0, 0.0]
    assert figures["identical_frac"] == [1.0, 1.0, 1.0] and figures["all_identical_frac"] == 1.0
    assert figures["degenerate"] is True
    caplog.set_level(logging.WARNING)
    assert warn_if_degenerate(figures, "llm tiny")
    assert "DEGENERATE JUDGE (llm tiny)" in caplog.text and "100% of 5 requests" in caplog.text


def test_a_judge_that_separates_candidates_is_not_degenerate(caplog):
    rng = np.random.default_rng(0)
    figures = score_spread(rng.uniform(size=(6, 3, 3)))
    assert figures["degenerate"] is False and figures["all_identical_frac"] == 0.0
    assert all(s > 0.1 for s in figures["std_over_candidates"])
    assert not warn_if_degenerate(figures, "features")
    assert "DEGENERATE" not in caplog.text


def test_hand_worked_figures_with_missing_candidates_and_aspects():
    ev = np.array([
        # request 0: two candidates differ only on profile; the third is unjudged (all NaN)
        [[0.2, 0.5, NAN], [0.6, 0.5, NAN], [NAN, NAN, NAN]],
        # request 1: identical on every aspect
        [[0.3, 0.3, 0.3], [0.3, 0.3, 0.3], [0.3, 0.3, 0.3]],
        # request 2: only one judged candidate: not compared
        [[0.1, 0.2, 0.3], [NAN, NAN, NAN], [NAN, NAN, NAN]],
    ])
    figures = score_spread(ev)
    assert figures["requests_compared"] == 2
    # profile: std 0.2 (request 0) and 0 (request 1); future 0 and 0; novelty only request 1.
    assert figures["std_over_candidates"] == pytest.approx([0.1, 0.0, 0.0])
    assert figures["identical_frac"] == [0.5, 1.0, 1.0]
    assert figures["all_identical_frac"] == 0.5
    # Half the requests identical, but the profile spread is real: not degenerate.
    assert figures["degenerate"] is False


def test_nothing_to_compare_and_bad_shapes():
    figures = score_spread(np.full((2, 3, 3), NAN))
    assert figures["requests_compared"] == 0 and figures["degenerate"] is None
    assert not warn_if_degenerate(figures, "llm")
    with pytest.raises(ValueError, match=r"\[requests, candidates, 3\]"):
        score_spread(np.zeros((2, 3)))
