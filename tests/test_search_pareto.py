"""Non-dominated sorting, knee and hypervolume: the arithmetic the front rests on."""

import itertools
import random

import pytest

from condsearch.orchestrate import dominates, hypervolume, knee_index, non_dominated

MAX_MIN = ["maximize", "minimize"]


def brute_front(points, directions):
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, directions) for q in points)]


def test_the_front_keeps_exactly_the_points_no_other_point_dominates():
    rng = random.Random(0)
    for _ in range(50):
        points = [[rng.random(), rng.randint(1, 20) * 1.0] for _ in range(rng.randint(1, 30))]
        assert non_dominated(points, MAX_MIN) == brute_front(points, MAX_MIN)


def test_equal_points_both_stay_on_the_front():
    assert non_dominated([[0.9, 10.0], [0.9, 10.0], [0.8, 12.0]], MAX_MIN) == [0, 1]


def test_three_objectives_are_sorted_too():
    rng = random.Random(1)
    directions = ["maximize", "minimize", "minimize"]
    points = [[rng.random() for _ in range(3)] for _ in range(40)]
    assert non_dominated(points, directions) == brute_front(points, directions)


def test_hypervolume_of_two_points_is_the_union_of_their_boxes():
    # accuracy 0.5 @ 2 FLOPs and 0.8 @ 6 FLOPs, reference (0, 10): 0.5*8 + 0.3*4
    assert hypervolume([[0.5, 2.0], [0.8, 6.0]], MAX_MIN, [0.0, 10.0]) == pytest.approx(5.2)


def test_hypervolume_ignores_dominated_points_and_points_beyond_the_reference():
    base = hypervolume([[0.5, 2.0], [0.8, 6.0]], MAX_MIN, [0.0, 10.0])
    extra = [[0.4, 3.0], [0.9, 11.0], [-0.1, 1.0]]
    assert hypervolume([[0.5, 2.0], [0.8, 6.0], *extra], MAX_MIN, [0.0, 10.0]) == base


def test_hypervolume_in_three_dimensions_matches_a_grid_count():
    points = [[0.2, 0.5, 0.7], [0.6, 0.3, 0.2], [0.4, 0.1, 0.9]]
    directions = ["minimize"] * 3
    n = 40
    cells = sum(
        any(all(c >= p[k] for k, c in enumerate(cell)) for p in points)
        for cell in itertools.product([(i + 0.5) / n for i in range(n)], repeat=3)
    )
    assert hypervolume(points, directions, [1, 1, 1]) == pytest.approx(cells / n**3, abs=0.02)


def test_the_knee_is_the_balanced_point_of_the_front():
    front = [[0.5, 1.0], [0.88, 2.0], [0.9, 10.0]]
    assert knee_index(front, MAX_MIN) == 1
    assert knee_index([[0.7, 3.0]], MAX_MIN) == 0
