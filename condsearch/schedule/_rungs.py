"""Rung levels and brackets: the epochs at which MO-ASHA judges a trial, and which trials meet.

A rung is an epoch at which a trial's result is compared with every other result recorded there.
The levels grow geometrically, `min_epochs * eta**k`, so each rung costs about eta times the one
before and successive halving keeps about 1/eta of the trials at each one. Levels are whole
epochs: a level that is not an integer (a fractional `reduction_factor`) is rounded half up, and a
rounded level that repeats the one before is dropped.

**The last rung is always `max_epochs`.** An intermediate level is kept only while the next level
up, `min_epochs * eta**(k + 1)`, still fits in `max_epochs`: a rung less than a factor eta below
`max_epochs` would cut the trials to 1/eta for a few more epochs (saving little, losing
candidates), so the last gap before `max_epochs` is between eta and eta**2 wide. Examples:
(1, 3, 9) -> [1, 3, 9]; (1, 3, 10) -> [1, 3, 10]; (1, 3, 27) -> [1, 3, 9, 27];
(2, 2, 16) -> [2, 4, 8, 16]; min_epochs == max_epochs -> [max_epochs].

**Brackets** (Hyperband over ASHA): bracket b starts at the b-th level, `min_epochs * eta**b`, and
shares the higher levels; bracket 0 is the most aggressive. A trial belongs to one bracket, drawn
once from a hash of (seed, trial id) with Hyperband's weights, so the draw needs no random state,
does not depend on the order trials arrive in, and a resumed search assigns every trial again
exactly as before.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

#: tolerance for "the next level fits": 3.0 * 3 ** 2 may land a hair above 27 in floating point
_FIT = 1e-9


def _whole(name: str, value: object, low: int = 1) -> int:
    """`value` as an int >= `low` (bools refused), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_reduction_factor(reduction_factor: object) -> float:
    """`reduction_factor` (eta) as a float; it must be a finite number greater than 1."""
    if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, (int, float)):
        raise ValueError(f"reduction_factor must be a number greater than 1, "
                         f"got {reduction_factor!r}")
    if not (math.isfinite(reduction_factor) and reduction_factor > 1):
        raise ValueError("reduction_factor must be greater than 1 (each rung keeps 1/eta of the "
                         f"trials), got {reduction_factor!r}")
    return float(reduction_factor)


def rung_levels(min_epochs: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """The rung epochs `min_epochs * eta**k` that leave room for one more factor eta below
    `max_epochs`, then `max_epochs` itself as the final rung (see the module docstring).

    Raises ValueError unless 1 <= min_epochs <= max_epochs (whole numbers) and
    reduction_factor > 1.
    """
    eta = check_reduction_factor(reduction_factor)
    low = _whole("min_epochs", min_epochs)
    high = _whole("max_epochs", max_epochs)
    if low > high:
        raise ValueError(f"min_epochs ({low}) must not exceed max_epochs ({high})")
    levels: list[int] = []
    exact = float(low)
    while exact * eta <= high * (1 + _FIT):
        level = math.floor(exact + 0.5)  # half up, not Python's round-half-even
        if (not levels or level > levels[-1]) and level < high:
            levels.append(level)
        exact *= eta
    return [*levels, high]


def check_brackets(brackets: object, levels: Sequence[int]) -> int:
    """`brackets` as an int: at least 1 and at most one bracket per rung level."""
    count = _whole("brackets", brackets)
    if count > len(levels):
        raise ValueError(
            f"brackets={count} is more than the {len(levels)} rung level(s) {list(levels)} allow: "
            "bracket b starts at the b-th level (min_epochs * reduction_factor**b)")
    return count


def bracket_weights(levels: Sequence[int], reduction_factor: float, brackets: int) -> list[float]:
    """Hyperband's share of new trials for each bracket, normalised to sum to 1.

    With s_max = len(levels) - 1, bracket b (s = s_max - b halvings) gets weight
    eta**s / (s + 1): Hyperband's initial bracket sizes, chosen so that every bracket spends
    about the same total budget. Bracket 0 therefore receives the most trials.
    """
    s_max = len(levels) - 1
    raw = [reduction_factor ** (s_max - b) / (s_max - b + 1) for b in range(brackets)]
    total = sum(raw)
    return [w / total for w in raw]


def draw_bracket(seed: int, trial_id: int | str, weights: Sequence[float]) -> int:
    """The bracket of `trial_id`: a uniform number from sha256(seed, id) against the cumulative
    `weights`. Deterministic, order-free and stateless (Python's own `hash` is salted per
    process, so it would not survive a resume)."""
    if len(weights) == 1:
        return 0
    kind = "i" if isinstance(trial_id, int) else "s"
    digest = hashlib.sha256(f"{seed}/{kind}:{trial_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    total = 0.0
    for b, w in enumerate(weights):
        total += w
        if u < total:
            return b
    return len(weights) - 1
