"""hit_shift: per-group hit-rate changes whose contributions add up to the overall change, on a
hand-worked example; popularity buckets with another split's edges; the valid/test report
shares the test's buckets and its parts add up."""

import math

import numpy as np
import pytest

from sgrec_jax.evaluation.diagnostics import popularity_buckets, popularity_edges
from sgrec_jax.evaluation.hit_shift import (
    hit_shift_by_group,
    reweighted_difference,
    valid_test_shift_report,
)


def test_a_hand_worked_split():
    # Group 0: 2 users, start hits 1, 1 -> policy 0, 1 (mean 1 -> 0.5); group 1: 2 users,
    # 0, 0 -> 1, 0 (0 -> 0.5); group 2: empty.
    group = np.array([0, 0, 1, 1])
    start = np.array([True, True, False, False])
    policy = np.array([False, True, True, False])
    rows = hit_shift_by_group(group, start, policy, 3)
    assert [r["users"] for r in rows] == [2, 2, 0]
    assert [r["share"] for r in rows] == [0.5, 0.5, 0.0]
    assert rows[0]["start"] == 1.0 and rows[0]["policy"] == 0.5 and rows[0]["difference"] == -0.5
    assert rows[1]["difference"] == 0.5 and rows[1]["contribution"] == 0.25
    assert math.isnan(rows[2]["start"]) and rows[2]["contribution"] == 0.0
    assert sum(r["contribution"] for r in rows) == pytest.approx(policy.mean() - start.mean())
    # Under a mix of 3/4 group 0 and 1/4 group 1: 0.75 * -0.5 + 0.25 * 0.5 = -0.25.
    assert reweighted_difference(rows, [0.75, 0.25, 0.0]) == pytest.approx(-0.25)


def test_contributions_add_up_on_random_users():
    rng = np.random.default_rng(0)
    group = rng.integers(0, 5, 1000)
    start, policy = rng.random(1000) < 0.3, rng.random(1000) < 0.35
    rows = hit_shift_by_group(group, start, policy, 5)
    assert sum(r["contribution"] for r in rows) == pytest.approx(policy.mean() - start.mean())
    assert reweighted_difference(rows, [r["share"] for r in rows]) == pytest.approx(
        policy.mean() - start.mean())


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match=r"groups must lie in \[0, 2\)"):
        hit_shift_by_group(np.array([0, 2]), np.zeros(2, bool), np.zeros(2, bool), 2)
    with pytest.raises(ValueError, match="equal, non-zero numbers of users"):
        hit_shift_by_group(np.array([0]), np.zeros(2, bool), np.zeros(2, bool), 2)
    with pytest.raises(ValueError, match="2 groups but 1 shares"):
        reweighted_difference(hit_shift_by_group(np.array([0, 1]), np.zeros(2, bool),
                                                 np.ones(2, bool), 2), [1.0])


def test_buckets_with_another_splits_edges():
    test_counts = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    edges = popularity_edges(test_counts, 2)  # the median, 5.5
    assert edges.tolist() == [5.5]
    np.testing.assert_array_equal(popularity_buckets(test_counts, 2),
                                  popularity_buckets(test_counts, 2, edges=edges))
    # Validation targets more popular than test's: most land in the upper bucket.
    np.testing.assert_array_equal(popularity_buckets(np.array([3, 8, 9, 20]), 2, edges=edges),
                                  [0, 1, 1, 1])
    with pytest.raises(ValueError, match="2 buckets need 1 edges, got 2"):
        popularity_buckets(test_counts, 2, edges=np.array([1.0, 2.0]))


def test_report_shares_the_test_buckets_and_adds_up():
    rng = np.random.default_rng(0)
    users = np.arange(400)
    hits = {s: {"start": rng.random(400) < 0.3, "policy": rng.random(400) < 0.3}
            for s in ("valid", "test")}
    counts = {"test": rng.integers(1, 50, 400), "valid": rng.integers(10, 60, 400)}
    report = valid_test_shift_report(hits, {"valid": users, "test": users}, counts,
                                     rl_users=users[:40], num_buckets=4)
    assert report["popularity_edges"] == np.quantile(counts["test"], [0.25, 0.5, 0.75]).tolist()
    for split in ("valid", "test"):
        part = report["splits"][split]
        assert sum(g["contribution"] for g in part["by_popularity"]) == pytest.approx(
            part["difference"])
        assert part["by_user"]["rl_users"]["users"] == 40
        assert part["by_user"]["sft_users"]["users"] == 360
    # Validation's targets are more popular here, so it holds fewer of the test's first bucket.
    valid_shares = [g["share"] for g in report["splits"]["valid"]["by_popularity"]]
    assert valid_shares[0] < 0.25
    rows = report["splits"]["valid"]["by_popularity"]
    test_shares = [g["share"] for g in report["splits"]["test"]["by_popularity"]]
    assert report["splits"]["valid"]["difference_under_test_mix"] == pytest.approx(
        sum(s * g["difference"] for s, g in zip(test_shares, rows)))
    assert -1 <= report["per_user_correlation"] <= 1
