"""Pareto front and 2-D hypervolume against hand-computed areas and a brute-force cell count."""

import itertools

import numpy as np
import pytest

from sgrec_jax.evaluation.pareto import (
    hypervolume_2d,
    minmax_normalise,
    pareto_mask,
    reference_point,
)

STAIRCASE = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])


def test_hypervolume_of_one_point_is_its_rectangle():
    assert hypervolume_2d(np.array([[3.0, 2.0]]), np.array([0.0, 0.0])) == 6.0
    assert hypervolume_2d(np.array([[3.0, 2.0]]), np.array([1.0, -1.0])) == 6.0


def test_hypervolume_of_a_staircase_adds_its_steps():
    # Union of [0,1]x[0,3], [0,2]x[0,2], [0,3]x[0,1]: 3 + 2 + 1 unit columns.
    assert hypervolume_2d(STAIRCASE, np.zeros(2)) == 6.0


def test_dominated_and_duplicate_points_add_nothing():
    more = np.concatenate([STAIRCASE, [[1.0, 1.0], [2.0, 2.0], [0.5, 2.5], [3.0, 1.0]]])
    assert hypervolume_2d(more, np.zeros(2)) == 6.0
    assert hypervolume_2d(more[::-1], np.zeros(2)) == 6.0  # order does not matter
    # Same first objective: only the higher one counts.
    assert hypervolume_2d(np.array([[2.0, 1.0], [2.0, 3.0]]), np.zeros(2)) == 6.0


def test_protocol_reference_point_is_the_componentwise_minimum():
    ref = reference_point(STAIRCASE)
    np.testing.assert_array_equal(ref, [1.0, 1.0])
    # The extreme points lie on the reference's edges: only (2, 2) spans an area, 1 x 1.
    assert hypervolume_2d(STAIRCASE, ref) == 1.0
    assert hypervolume_2d(np.array([[0.0, 5.0], [-1.0, -1.0]]), np.zeros(2)) == 0.0
    assert hypervolume_2d(np.zeros((0, 2)), np.zeros(2)) == 0.0


def test_hypervolume_matches_a_brute_force_count_of_unit_cells():
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = rng.integers(0, 9, size=(rng.integers(1, 8), 2)).astype(float)
        covered = sum(
            bool(np.any((points[:, 0] >= i + 1) & (points[:, 1] >= j + 1)))
            for i, j in itertools.product(range(9), range(9))
        )
        assert hypervolume_2d(points, np.zeros(2)) == covered


def test_pareto_mask_keeps_non_dominated_points_and_duplicates():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.0, 1.0], [2.0, 2.0],
                       [2.0, 1.5], [0.0, 3.0]])
    np.testing.assert_array_equal(
        pareto_mask(points), [True, True, True, False, True, False, False]
    )
    # The front alone has the same hypervolume as the whole set.
    ref = reference_point(points)
    assert hypervolume_2d(points[pareto_mask(points)], ref) == hypervolume_2d(points, ref)


def test_minmax_normalise_maps_the_range_to_unit_interval():
    points = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    np.testing.assert_allclose(
        minmax_normalise(points, points), [[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]]
    )


@pytest.mark.parametrize("bad", [np.zeros((3,)), np.zeros((2, 3)), np.array([[np.nan, 1.0]])])
def test_rejects_malformed_points(bad):
    with pytest.raises(ValueError):
        hypervolume_2d(bad, np.zeros(2))


def test_front_distance_is_igd_plus():
    from sgrec_jax.evaluation.pareto import front_distance

    front = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    points = np.array([
        [0.5, 0.5],   # on the front
        [0.9, 0.9],   # beyond it: no front point dominates it
        [0.2, 0.2],   # nearest shortfall (0.3, 0.3) to (0.5, 0.5)
        [0.8, -0.5],  # below (1, 0): only the shortfall counts, (0.2, 0.5)
    ])
    np.testing.assert_allclose(front_distance(points, front),
                               [0.0, 0.0, np.hypot(0.3, 0.3), np.hypot(0.2, 0.5)])
    with pytest.raises(ValueError, match="front has no points"):
        front_distance(points, np.zeros((0, 2)))
