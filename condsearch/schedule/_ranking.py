"""Ranking the results at one rung: non-dominated sorting, crowding distance, trial id.

Every vector here is already *minimised* (a maximised objective negated), the convention of
`condsearch.orchestrate._pareto`, whose `dominates` this module agrees with: `a` dominates `b`
when it is no worse in every objective and better in one, so duplicates never dominate each
other and share a front. (That module is not imported: it would load Optuna, and this package
stays free of it.)

The order, best first:

1. feasible before infeasible: an infeasible result ranks below every feasible one, and the
   infeasible ones are ordered among themselves by the same rules;
2. front: non-dominated sorting, front 0 (nobody dominates it) first;
3. crowding distance within the front, larger first (NSGA-II): the sum over objectives of the
   gap between a point's two neighbours, divided by the front's spread; the front's extremes in
   an objective get infinity, so the ends of a trade-off survive a cut before its crowded
   middle. An objective the front does not spread over (all equal, or an infinite spread)
   contributes nothing and makes no extreme;
4. trial id, smaller first (any ties left: identical points), so the order never depends on the
   order results arrived in.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Vector = Sequence[float]


@dataclass(frozen=True)
class Placement:
    """Where one result landed: its index in the input, its group, its front, its crowding."""

    index: int
    feasible: bool
    front: int
    crowding: float


def dominates(a: Vector, b: Vector) -> bool:
    """Whether minimised `a` is no worse than `b` everywhere and better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def fronts(points: Sequence[Vector]) -> list[list[int]]:
    """The indices of `points` grouped into non-dominated fronts, front 0 first, each sorted.

    Two objectives take an O(n log n) sweep; any other count ENS-BS (a bisection over the fronts
    built so far, in lexicographic order). Both give the same fronts (a result's front is the length of the longest chain of
    results dominating it)."""
    if not points:
        return []
    if len(points[0]) == 2:
        return _fronts_2d(points)
    return _fronts_general(points)


def _fronts_2d(points: Sequence[Vector]) -> list[list[int]]:
    # In lexicographic order every dominator of a point comes before it. Each front's last
    # member has the front's smallest second value, and those values never decrease from one
    # front to the next, so the first front that does not dominate a point is a bisection away:
    # a front dominates p exactly when its last member has a second value <= p's and is not a
    # duplicate of p.
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    groups: list[list[int]] = []
    lasts: list[float] = []  # second value of each front's last member
    for i in order:
        p = points[i]
        k = bisect.bisect_right(lasts, p[1])
        if k > 0 and tuple(points[groups[k - 1][-1]]) == tuple(p):
            k -= 1  # a duplicate of that front's last member joins it
        if k == len(groups):
            groups.append([i])
            lasts.append(p[1])
        else:
            groups[k].append(i)
            lasts[k] = p[1]
    return [sorted(g) for g in groups]


def _fronts_general(points: Sequence[Vector]) -> list[list[int]]:
    # Efficient non-dominated sort with binary search (ENS-BS, Zhang et al. 2015): in
    # lexicographic order every dominator of a point comes before it, and a front that holds a
    # dominator of p is preceded by fronts that all do (its member's own dominator, and so on),
    # so p's front is the first one holding none, a bisection away.
    vecs = [tuple(p) for p in points]
    tails = [v[1:] for v in vecs]
    order = sorted(range(len(vecs)), key=vecs.__getitem__)
    groups: list[list[int]] = []

    def beaten(front: list[int], i: int) -> bool:
        # q comes before p, so q[0] <= p[0]: q dominates p when q <= p elsewhere and q != p.
        p, tail = vecs[i], tails[i]
        for j in reversed(front):  # the latest members are the closest, likeliest dominators
            if all(map(operator.le, tails[j], tail)) and vecs[j] != p:
                return True
        return False

    for i in order:
        lo, hi = 0, len(groups)
        while lo < hi:
            mid = (lo + hi) // 2
            if beaten(groups[mid], i):
                lo = mid + 1
            else:
                hi = mid
        if lo == len(groups):
            groups.append([i])
        else:
            groups[lo].append(i)
    return [sorted(g) for g in groups]


def crowding(points: Sequence[Vector], front: Sequence[int],
             keys: Sequence[Any]) -> dict[int, float]:
    """NSGA-II crowding distance of each index in `front` (see the module docstring); `keys`
    order ties when sorting along an objective, so the result is deterministic."""
    distance = dict.fromkeys(front, 0.0)
    for m in range(len(points[front[0]]) if front else 0):
        order = sorted(front, key=lambda i: (points[i][m], keys[i]))
        spread = points[order[-1]][m] - points[order[0]][m]
        if not (math.isfinite(spread) and spread > 0):
            continue
        distance[order[0]] = distance[order[-1]] = math.inf
        for before, i, after in zip(order, order[1:], order[2:]):
            distance[i] += (points[after][m] - points[before][m]) / spread
    return distance


def rank(points: Sequence[Vector], feasible: Sequence[bool],
         keys: Sequence[Any]) -> list[Placement]:
    """Every result's placement, best first (the order of the module docstring).

    `points` are minimised vectors (finite for a feasible result), `feasible` says which are
    feasible, `keys` are the trial ids' sort keys."""
    placed: list[Placement] = []
    for group in (True, False):
        members = [i for i in range(len(points)) if bool(feasible[i]) is group]
        sub = [points[i] for i in members]
        sub_keys = [keys[i] for i in members]
        ordered = []
        for f, front in enumerate(fronts(sub)):
            dist = crowding(sub, front, sub_keys)
            for j in front:
                ordered.append((f, -dist[j], sub_keys[j], members[j], dist[j]))
        ordered.sort(key=lambda t: t[:3])
        placed.extend(Placement(i, group, f, d) for f, _, _, i, d in ordered)
    return placed
