import numpy as np
import pytest

from sgrec_jax.sid.metrics import codebook_usage, collision_stats, sid_metrics


def test_collision_stats():
    codes = np.array([[0, 0], [2, 1], [0, 0], [1, 1], [0, 0], [2, 1]])
    assert collision_stats(codes) == {
        "collision_rate": 5 / 6,
        "num_distinct_sids": 3,
        "max_group_size": 3,
        "surplus_items": 3,
    }
    assert collision_stats(np.array([[0], [1]]))["collision_rate"] == 0.0


def test_codebook_usage_and_perplexity():
    codes = np.array([[0, 3], [1, 3], [0, 3], [1, 3]])
    usage = codebook_usage(codes, [4, 8])
    assert usage == pytest.approx(
        {"usage_l0": 0.5, "perplexity_l0": 2.0, "usage_l1": 1 / 8, "perplexity_l1": 1.0}
    )
    # Uniform over all K codes: usage 1 and perplexity K.
    uniform = codebook_usage(np.arange(16)[:, None] % 8, 8)
    assert uniform == pytest.approx({"usage_l0": 1.0, "perplexity_l0": 8.0})


def test_sid_metrics_merges_and_checks_sizes():
    codes = np.array([[0, 1], [0, 1]])
    metrics = sid_metrics(codes, 2)
    assert metrics["collision_rate"] == 1.0 and metrics["usage_l1"] == 0.5
    with pytest.raises(ValueError, match="level 1 has code 1 >= size 1"):
        codebook_usage(codes, [2, 1])
    with pytest.raises(ValueError, match="3 codebook sizes for 2 levels"):
        codebook_usage(codes, [2, 2, 2])
