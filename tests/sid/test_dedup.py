import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from sgrec_jax.sid.dedup import append_dedup_level, check_codes, lexicographic_order


@pytest.mark.parametrize("seed", range(5))
def test_dedup_makes_a_bijection(seed):
    rng = np.random.default_rng(seed)
    # A tiny alphabet forces many collisions; some items are copied to force more.
    codes = rng.integers(0, 3, (300, 3))
    codes[rng.integers(0, 300, 40)] = codes[rng.integers(0, 300, 40)]
    deduped, size = append_dedup_level(codes)
    assert deduped.shape == (300, 4) and deduped.dtype == np.int32
    np.testing.assert_array_equal(deduped[:, :3], codes)
    assert len({tuple(row) for row in deduped.tolist()}) == 300
    # Reference: within each tuple, items numbered 0, 1, ... in item order.
    seen = defaultdict(int)
    for item, row in enumerate(codes.tolist()):
        assert deduped[item, 3] == seen[tuple(row)]
        seen[tuple(row)] += 1
    assert size == max(seen.values())


def test_unique_codes_get_zero_and_size_one():
    codes = np.array([[0, 1], [1, 0], [1, 1]])
    deduped, size = append_dedup_level(codes)
    np.testing.assert_array_equal(deduped[:, 2], 0)
    assert size == 1


@pytest.mark.parametrize("high", [256, 2**30])  # packed int64 key, and the lexsort fallback
def test_lexicographic_order_matches_lexsort(high):
    codes = np.random.default_rng(0).integers(0, high, (500, 3))
    codes[::7] = codes[0]  # ties must keep item order
    np.testing.assert_array_equal(lexicographic_order(codes), np.lexsort(codes.T[::-1]))


def test_check_codes_rejects_bad_codes():
    with pytest.raises(ValueError, match="item 1 level 0 is -2"):
        check_codes(np.array([[0], [-2]]))
    with pytest.raises(ValueError, match="integers"):
        check_codes(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        check_codes(np.zeros(3, int))


@pytest.mark.real_data
def test_letter_beauty_index(beauty_dir):
    index = json.loads((beauty_dir / "letter_sid_index.json").read_text())
    codes = np.array([[int(tok[3:-1]) for tok in index[str(i)]] for i in range(len(index))])
    deduped, size = append_dedup_level(codes)
    assert len(index) == 12101
    assert len({tuple(row) for row in codes.tolist()}) == 12088
    assert len({tuple(row) for row in deduped.tolist()}) == 12101
    assert size == max(Counter(map(tuple, codes.tolist())).values())
