"""experiments/valid_test_shift: the report's buckets share the test's edges, its parts add up,
and a missing cell is one clear error."""

import numpy as np
import pytest

from experiments import valid_test_shift


def test_report_shares_the_test_buckets_and_adds_up():
    rng = np.random.default_rng(0)
    users = np.arange(400)
    hits = {s: {"start": rng.random(400) < 0.3, "policy": rng.random(400) < 0.3}
            for s in ("valid", "test")}
    counts = {"test": rng.integers(1, 50, 400), "valid": rng.integers(10, 60, 400)}
    report = valid_test_shift.shift_report(hits, {"valid": users, "test": users}, counts,
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


def test_a_directory_that_is_not_an_rl_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"is not a finished rl run: no config.json"):
        valid_test_shift.check_cell(tmp_path)
