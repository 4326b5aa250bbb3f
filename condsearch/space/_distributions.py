"""Values a search space may give a key: fixed, or an int / float range or a choice to sample.

Optuna is never imported here; `suggest` receives the trial it calls.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]
Issue = tuple[Path, str]  # (key path relative to the value, message)

_PRIMITIVE = (type(None), bool, int, float, str)
_KINDS = ("int", "float", "choice")
_OPTIONS = {"int": ("step", "log"), "float": ("step", "log"), "choice": ()}
#: how many values a discrete range may hold before checks stop enumerating it
ENUMERATION_LIMIT = 4096


@dataclass(frozen=True)
class ParamSpec:
    """What a key accepts: its type (`int`, `float`, `bool`, `enum`, `int_list`, `str`, or `any`
    for a user's undeclared key) and bounds."""

    kind: str
    default: Any = None
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    values: tuple[str, ...] = ()
    nullable: bool = False
    doc: str = ""
    #: a value a candidate commonly has, for a key without a default: what validation compares a
    #: value with to name the key that drives a space's cost
    typical: Any = None

    def check(self, value: Any) -> str | None:
        """Why `value` is not a valid fixed value of this key, or None when it is."""
        if self.kind == "any":
            return None
        if value is None:
            return None if self.nullable else f"expected {self._expected()}, got null"
        if self.kind == "str":
            return None if isinstance(value, str) and value else (
                f"expected {self._expected()}, got {show(value)}")
        if self.kind == "int_list":
            if not isinstance(value, list) or not value:
                return f"expected a non-empty list of integers, got {show(value)}"
            for item in value:
                problem = self._check_number(item, integer=True)
                if problem:
                    return f"item {show(item)}: {problem}"
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"expected true or false, got {show(value)}"
        if self.kind == "enum":
            if isinstance(value, str) and value in self.values:
                return None
            return f"unknown value {show(value)}; {_suggest(value, self.values)}"
        return self._check_number(value, integer=self.kind == "int")

    def _check_number(self, value: Any, integer: bool) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)
        ):
            return f"expected {'an integer' if integer else 'a number'}, got {show(value)}" + (
                number_hint(value))
        if not math.isfinite(value):
            return f"expected a finite number, got {show(value)}"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"must be {'>' if self.lo_open else '>='} {_num(self.lo)}, got {show(value)}"
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return f"must be {'<' if self.hi_open else '<='} {_num(self.hi)}, got {show(value)}"
        return None

    def _expected(self) -> str:
        return {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "enum": "one of " + ", ".join(self.values),
            "int_list": "a list of integers",
            "str": "a non-empty string",
            "any": "any value",
        }[self.kind]

    def normalize(self, value: Any) -> Any:
        """A valid value in canonical form (ints given for a float key become floats)."""
        if self.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return copy.deepcopy(value)


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched."""

    value: Any

    def suggest(self, trial: Any, name: str) -> Any:
        return copy.deepcopy(self.value)

    def values(self) -> list[Any]:
        return [self.value]

    def to_plain(self) -> Any:
        return copy.deepcopy(self.value)


@dataclass(frozen=True)
class IntRange:
    """Integers lo..hi (inclusive) in steps of `step`, optionally log-uniform."""

    lo: int
    hi: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.lo, self.hi, step=self.step, log=self.log)

    def values(self) -> list[int] | None:
        if (self.hi - self.lo) // self.step + 1 > ENUMERATION_LIMIT:
            return None
        return list(range(self.lo, self.hi + 1, self.step))

    def to_plain(self) -> dict[str, Any]:
        return {"int": [self.lo, self.hi], "step": self.step, "log": self.log}


@dataclass(frozen=True)
class FloatRange:
    """Reals in [lo, hi], optionally log-uniform or discretized by `step`."""

    lo: float
    hi: float
    step: float | None = None
    log: bool = False

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.lo, self.hi, step=self.step, log=self.log)

    def values(self) -> None:
        return None

    def to_plain(self) -> dict[str, Any]:
        return {"float": [self.lo, self.hi], "step": self.step, "log": self.log}


@dataclass(frozen=True)
class Choice:
    """One of a list of values; lists, mappings and nulls are allowed as items."""

    items: tuple[Any, ...]

    def suggest(self, trial: Any, name: str) -> Any:
        if all(isinstance(item, _PRIMITIVE) for item in self.items):
            return trial.suggest_categorical(name, list(self.items))
        # Optuna stores only primitive choices, so structured items travel as their JSON text.
        picked = trial.suggest_categorical(name, [json.dumps(item) for item in self.items])
        return json.loads(picked)

    def values(self) -> list[Any]:
        return list(self.items)

    def to_plain(self) -> dict[str, Any]:
        return {"choice": copy.deepcopy(list(self.items))}


Distribution = Fixed | IntRange | FloatRange | Choice


def lowest(dist: Distribution) -> Any:
    """The smallest value a numeric distribution can take."""
    if isinstance(dist, (IntRange, FloatRange)):
        return dist.lo
    return min(v for v in dist.values() if v is not None)


def highest(dist: Distribution) -> Any:
    """The largest value a numeric distribution can take."""
    if isinstance(dist, IntRange):
        return dist.lo + (dist.hi - dist.lo) // dist.step * dist.step
    if isinstance(dist, FloatRange):
        return dist.hi
    return max(v for v in dist.values() if v is not None)


def parse_param(value: Any, spec: ParamSpec) -> tuple[Distribution | None, list[Issue]]:
    """Read a key's value: a fixed value, or a `{int|float|choice: ...}` distribution."""
    if isinstance(value, dict):
        return _parse_distribution(value, spec)
    problem = spec.check(value)
    return (None, [((), problem)]) if problem else (Fixed(spec.normalize(value)), [])


def _parse_distribution(d: dict[Any, Any], spec: ParamSpec) -> tuple[Distribution | None, list[Issue]]:
    kinds = [k for k in _KINDS if k in d]
    if len(kinds) > 1:
        return None, [((kinds[1],), f"give one of int, float or choice, not both {kinds[0]} and {kinds[1]}")]
    if not kinds:
        unknown = [k for k in d if k not in ("step", "log")]
        if unknown:
            return None, [((k,), f"unknown key; {_suggest(k, _KINDS, 'a distribution is one of')}")
                          for k in unknown]
        return None, [((), "a distribution needs one of int: [lo, hi], float: [lo, hi] or choice: [...]")]
    kind = kinds[0]
    issues: list[Issue] = []
    for key in d:
        if key != kind and key not in _OPTIONS[kind]:
            allowed = _OPTIONS[kind]
            hint = _suggest(key, allowed, f"a {kind} distribution also takes") if allowed else (
                "a choice takes no other keys")
            issues.append(((key,), f"unknown key; {hint}"))
    if kind == "choice":
        dist, more = _parse_choice(d["choice"], spec)
    else:
        dist, more = _parse_range(kind, d, spec)
    issues += more
    return (dist if not issues else None), issues


def _parse_choice(items: Any, spec: ParamSpec) -> tuple[Distribution | None, list[Issue]]:
    if not isinstance(items, list):
        return None, [(("choice",), f"expected a list of values, got {show(items)}")]
    if not items:
        return None, [(("choice",), "empty choice; list at least one value")]
    issues = [(("choice", i), p) for i, item in enumerate(items) if (p := spec.check(item))]
    return Choice(tuple(spec.normalize(item) for item in items)), issues


def _parse_range(kind: str, d: dict[Any, Any], spec: ParamSpec) -> tuple[Distribution | None, list[Issue]]:
    if spec.kind not in ("int", "float", "any"):
        return None, [((kind,), f"a {kind} range cannot set this key (it takes {spec._expected()}); "
                                "use choice: [...]")]
    if kind == "float" and spec.kind == "int":
        return None, [((kind,), "a float range cannot set an integer key; use int: [lo, hi]")]
    bounds = d[kind]
    integer = kind == "int"
    number = (int,) if integer else (int, float)
    if not (isinstance(bounds, list) and len(bounds) == 2
            and all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)):
        what = "integers" if integer else "numbers"
        return None, [((kind,), f"expected [lo, hi], two {what}, got {show(bounds)}")]
    lo, hi = bounds
    issues: list[Issue] = []
    if lo > hi:
        issues.append(((kind,), f"lo ({_num(lo)}) > hi ({_num(hi)})"))
    for label, bound in (("lo", lo), ("hi", hi)):
        problem = spec.check(float(bound) if spec.kind == "float" else bound)
        if problem:
            issues.append(((kind,), f"{label} ({_num(bound)}) {problem.split(', got')[0]}"))
    log = d.get("log", False)
    if not isinstance(log, bool):
        issues.append((("log",), f"expected true or false, got {show(log)}"))
        log = False
    default_step = 1 if integer else None
    step = d.get("step", default_step)
    if integer and (not isinstance(step, int) or isinstance(step, bool) or step < 1):
        issues.append((("step",), f"expected an integer >= 1, got {show(step)}"))
        step = 1
    elif not integer and step is not None and (
        isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
    ):
        issues.append((("step",), f"expected a number > 0 or null, got {show(step)}"))
        step = None
    if log and min(lo, hi) <= 0:
        issues.append((("log",), f"log: true needs bounds > 0, but lo is {_num(min(lo, hi))}"))
    if log and step not in (None, 1 if integer else None):
        issues.append((("log",), "log: true cannot be combined with a step"))
    if issues:
        return None, issues
    if integer:
        return IntRange(lo, hi, step, log), []
    return FloatRange(float(lo), float(hi), None if step is None else float(step), log), []


def _suggest(word: Any, options: tuple[str, ...] | list[str], lead: str = "expected one of") -> str:
    """`did you mean 'x'?` when a close option exists, else the list of options."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"{lead}: {', '.join(options)}"


def suggest_key(word: Any, options: list[str] | tuple[str, ...], lead: str = "expected one of") -> str:
    """Public form of the nearest-match hint used across the package's messages."""
    return _suggest(word, options, lead)


def number_hint(value: Any) -> str:
    """A hint for `1e-3` or `1.0e6`, which YAML 1.1 reads as text: it wants `1.0e-3`, `1.0e+6`."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads this as text: write a dot and a signed exponent, e.g. 1.0e-3 or 1.0e+6)"
    return ""


def show(value: Any) -> str:
    """A value as a user wrote it in YAML (strings quoted, null, true/false)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list, bool)) or value is None:
        return json.dumps(value, default=str)
    if isinstance(value, float):
        return _num(value)
    return str(value)


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else str(x)
