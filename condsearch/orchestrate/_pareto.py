"""Non-dominated sorting, knee point and hypervolume over objective vectors."""

from __future__ import annotations

import math
from collections.abc import Sequence

Directions = Sequence[str]


def _as_minimized(values: Sequence[float], directions: Directions) -> list[float]:
    return [-v if d == "maximize" else v for v, d in zip(values, directions)]


def dominates(a: Sequence[float], b: Sequence[float], directions: Directions) -> bool:
    """True when `a` is at least as good as `b` in every objective and better in one."""
    ma, mb = _as_minimized(a, directions), _as_minimized(b, directions)
    return all(x <= y for x, y in zip(ma, mb)) and any(x < y for x, y in zip(ma, mb))


def non_dominated(points: Sequence[Sequence[float]], directions: Directions) -> list[int]:
    """Indices of the points no other point dominates (duplicates all stay on the front)."""
    minimized = sorted(
        ((_as_minimized(p, directions), i) for i, p in enumerate(points)), key=lambda t: t[0]
    )
    front: list[tuple[list[float], int]] = []
    for vec, i in minimized:
        # Sorted lexicographically, so only an earlier point can dominate a later one.
        if not any(
            all(x <= y for x, y in zip(f, vec)) and any(x < y for x, y in zip(f, vec))
            for f, _ in front
        ):
            front.append((vec, i))
    return sorted(i for _, i in front)


def _normalise(points: Sequence[Sequence[float]]) -> list[list[float]]:
    lows = [min(col) for col in zip(*points)]
    highs = [max(col) for col in zip(*points)]
    return [
        [(v - lo) / (hi - lo) if hi > lo else 0.0 for v, lo, hi in zip(p, lows, highs)]
        for p in points
    ]


def knee_index(points: Sequence[Sequence[float]], directions: Directions) -> int:
    """Index of the front point closest to the ideal corner after min-max normalisation.

    `points` should be a front. Fewer than three points have no bend, and min-max normalisation
    would put two points at opposite corners (a tie), so a small front is decided otherwise:

    - one point: that point (0);
    - two points: the one with the better normalised trade-off, where each objective's
      shortfall from the better of the two is divided by the larger magnitude of the two values
      (so a cheap point wins unless the other is much more accurate for little more cost);
      a tie goes to the point better in the first maximised objective (the more accurate one),
      then to the first index.
    """
    if not points:
        raise ValueError("knee of an empty front")
    if len(points) == 1:
        return 0
    if len(points) == 2:
        return _knee_of_two(points, directions)
    normed = _normalise([_as_minimized(p, directions) for p in points])
    return min(range(len(points)), key=lambda i: (math.hypot(*normed[i]), i))


def _knee_of_two(points: Sequence[Sequence[float]], directions: Directions) -> int:
    """The knee of a two-point front: the smaller relative shortfall; ties to the more accurate."""
    mins = [_as_minimized(p, directions) for p in points]

    def shortfall(i: int) -> float:
        gaps = []
        for k, v in enumerate(mins[i]):
            best = min(m[k] for m in mins)
            scale = max(abs(m[k]) for m in mins)
            gaps.append((v - best) / scale if scale > 0 else 0.0)
        return math.hypot(*gaps)

    accurate = next((k for k, d in enumerate(directions) if d == "maximize"), 0)
    return min(range(2), key=lambda i: (round(shortfall(i), 12), mins[i][accurate], i))


def hypervolume(
    points: Sequence[Sequence[float]], directions: Directions, reference: Sequence[float]
) -> float:
    """Volume dominated by `points` and bounded by `reference` (exact; any objective count).

    Points that do not strictly improve on the reference in every objective add nothing.
    """
    ref = _as_minimized(reference, directions)
    pts = [
        q for q in (_as_minimized(p, directions) for p in points)
        if all(x < r for x, r in zip(q, ref))
    ]
    front = non_dominated(pts, ["minimize"] * len(ref))
    return _hv([pts[i] for i in front], ref)


def _hv(points: list[list[float]], ref: list[float]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    # Slice along the last objective: each slab's area is the hypervolume of the points below it.
    points = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for k, p in enumerate(points):
        upper = points[k + 1][-1] if k + 1 < len(points) else ref[-1]
        if upper > p[-1]:
            volume += (upper - p[-1]) * _hv([q[:-1] for q in points[: k + 1]], ref[:-1])
    return volume
