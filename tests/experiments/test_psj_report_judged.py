"""psj_report --judge_dir: the judged target-vs-negative pairs of a stage-1 sample, per negative
kind, kept only where the stage-1 store answered both items; a sample without the stage-2
negative columns is a clear error."""

import numpy as np
import pytest

from experiments.psj_report import judged_pairs
from sgrec_jax.core.files import write_npz
from sgrec_jax.judge.store import EvidenceStore


def write_judge_dir(root, columns, items, answered):
    folder = root / "judge"
    folder.mkdir(parents=True)
    users = np.array([0, 1], np.int32)
    write_npz(folder / "sample.npz", users=users, history=np.array([[-1, 5], [6, 7]], np.int32),
              target=items[:, 0], items=items, columns=np.array(columns))
    u, i = zip(*answered)
    EvidenceStore(np.array(u), np.array(i), np.full((len(u), 3), 0.5), "m / v").save(
        folder / "evidence.npz")


def test_pairs_per_kind_keep_only_fully_answered_ones(tmp_path):
    items = np.array([[10, 11, 12, 13], [20, 21, 22, 23]], np.int32)
    # user 1's nearest negative (22) was not answered.
    answered = [(0, 10), (0, 11), (0, 12), (0, 13), (1, 20), (1, 21), (1, 23)]
    write_judge_dir(tmp_path, ["target", "random", "nearest", "popular"], items, answered)
    pairs, store = judged_pairs(tmp_path, num_users=2)
    assert len(store) == 7 and set(pairs) == {"random", "nearest", "popular"}
    np.testing.assert_array_equal(pairs["random"].item_i, [10, 20])
    np.testing.assert_array_equal(pairs["random"].item_j, [11, 21])
    np.testing.assert_array_equal(pairs["nearest"].item_j, [12])  # user 1's pair dropped
    np.testing.assert_array_equal(pairs["nearest"].user, [0])
    np.testing.assert_array_equal(pairs["popular"].history, [[-1, 5], [6, 7]])


def test_a_sample_without_log_negatives_is_a_clear_error(tmp_path):
    items = np.array([[10, 11], [20, 21]], np.int32)
    write_judge_dir(tmp_path, ["target", "negative"], items, [(0, 10)])
    with pytest.raises(ValueError, match=r"no candidate column\(s\) \['random', 'nearest', "
                                         r"'popular'\].*log_negatives=True"):
        judged_pairs(tmp_path, num_users=2)
    with pytest.raises(ValueError, match="user index out of range"):
        write_judge_dir(tmp_path / "b", ["target", "random", "nearest", "popular"],
                        np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int32), [(0, 1)])
        judged_pairs(tmp_path / "b", num_users=1)
