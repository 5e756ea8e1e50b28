import numpy as np
import pytest

from sgrec_jax.evaluation.bootstrap import paired_bootstrap, paired_bootstrap_metrics
from sgrec_jax.evaluation.metrics import PER_USER, ranking_metrics


def test_identical_systems_give_zero_difference():
    a = np.random.default_rng(0).integers(0, 2, 500).astype(float)
    result = paired_bootstrap(a, a.copy(), num_resamples=2000)
    assert result.mean_diff == 0.0 and result.ci_low == 0.0 and result.ci_high == 0.0
    assert result.p_value_one_sided == 1.0 and result.p_value_two_sided == 1.0


def test_equal_quality_systems_ci_contains_zero():
    rng = np.random.default_rng(1)
    a, b = (rng.random(3000) < 0.2).astype(float), (rng.random(3000) < 0.2).astype(float)
    result = paired_bootstrap(a, b, num_resamples=2000, seed=3)
    assert result.ci_low < 0.0 < result.ci_high and result.p_value_two_sided > 0.05


def test_clearly_better_system_has_ci_above_zero():
    rng = np.random.default_rng(2)
    b = (rng.random(3000) < 0.1).astype(float)
    a = np.maximum(b, rng.random(3000) < 0.1)  # A finds everything B finds, and more.
    result = paired_bootstrap(a, b, num_resamples=2000)
    assert result.mean_a == pytest.approx(a.mean()) and result.mean_b == pytest.approx(b.mean())
    assert result.mean_diff == pytest.approx(a.mean() - b.mean())
    assert 0.0 < result.ci_low < result.mean_diff < result.ci_high
    assert result.p_value_one_sided == 0.0 and result.p_value_two_sided == 0.0
    flipped = paired_bootstrap(b, a, num_resamples=2000)
    assert flipped.ci_high < 0.0 and flipped.p_value_one_sided == 1.0


@pytest.mark.parametrize("continuous", [False, True])
def test_ci_width_matches_the_standard_error(continuous):
    # Few distinct differences take the multinomial path, continuous ones the index path.
    rng = np.random.default_rng(4)
    n = 4000
    if continuous:
        a, b = rng.random(n), rng.random(n)
    else:
        a, b = rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float)
    result = paired_bootstrap(a, b, num_resamples=4000, seed=5)
    half_width = (result.ci_high - result.ci_low) / 2
    assert half_width == pytest.approx(1.96 * np.std(a - b) / np.sqrt(n), rel=0.08)
    middle = (result.ci_low + result.ci_high) / 2
    assert middle == pytest.approx(result.mean_diff, abs=0.2 * half_width)


def test_seeded_and_joint_over_metrics():
    rng = np.random.default_rng(6)
    target = rng.integers(0, 50, 1000)
    ranked_a, ranked_b = rng.integers(0, 50, (1000, 10)), rng.integers(0, 50, (1000, 10))
    ranked_a[:300, 0] = target[:300]  # A puts 30% of targets first.
    per_a = ranking_metrics(ranked_a, target)[PER_USER]
    per_b = ranking_metrics(ranked_b, target)[PER_USER]
    results = paired_bootstrap_metrics(per_a, per_b, num_resamples=1000, seed=7)
    assert list(results) == ["recall@5", "ndcg@5", "recall@10", "ndcg@10"]
    assert all(r.ci_low > 0 and r.num_users == 1000 for r in results.values())
    assert results == paired_bootstrap_metrics(per_a, per_b, num_resamples=1000, seed=7)
    other = paired_bootstrap_metrics(per_a, per_b, num_resamples=1000, seed=8)
    assert other["ndcg@10"].ci_low != results["ndcg@10"].ci_low
    only = paired_bootstrap_metrics(per_a, per_b, metrics=["ndcg@5"], num_resamples=10)
    assert list(only) == ["ndcg@5"]


def test_bad_arguments():
    a = np.zeros(10)
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(a, np.zeros(9))
    with pytest.raises(ValueError, match="non-finite"):
        paired_bootstrap(a, np.full(10, np.nan))
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        paired_bootstrap(a, a, confidence=1.0)
    with pytest.raises(ValueError, match="'ndcg@5' is missing"):
        paired_bootstrap_metrics({"ndcg@5": a}, {"recall@5": a})


def test_with_rewards_aligns_rewards_to_the_rankings_users(tmp_path):
    from sgrec_jax.evaluation.paired import UserMetrics, with_rewards

    metrics = UserMetrics(np.array([1, 2, 3]), np.array([7, 8, 9]),
                          {"recall@10": np.array([1.0, 0.0, 1.0])})
    path = tmp_path / "rewards.npz"
    np.savez(path, users_u=np.array([3, 1, 2]), **{"ecpm@10": np.array([30.0, 10.0, 20.0])})
    got = with_rewards(metrics, str(path), ["ecpm@10", "semantic@10"])
    np.testing.assert_array_equal(got.values["ecpm@10"], [10.0, 20.0, 30.0])
    assert set(got.values) == {"recall@10", "ecpm@10"}  # names the file lacks are skipped
    np.savez(path, users_u=np.array([3, 1, 4]), **{"ecpm@10": np.zeros(3)})
    with pytest.raises(ValueError, match="not those of the rankings"):
        with_rewards(metrics, str(path), ["ecpm@10"])
