"""`--set key.path=value` overrides, applied to the parsed document before validation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from condsearch.space._limits import LimitExceeded, load_limited

Path = tuple[str | int, ...]
_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Override:
    """One applied `--set`: its 1-based position, the path it set and the mappings it created."""

    number: int
    path: Path
    created: set[Path] = field(default_factory=set)

    def owns(self, path: Path) -> bool:
        """Whether a problem at `path` comes from this override."""
        return path[: len(self.path)] == self.path or path in self.created


def parse_override(raw: str) -> tuple[Path, Any]:
    """`model.dim=32` -> (("model", "dim"), 32); the value is read as YAML. Raises ValueError."""
    key, sep, text = raw.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"expected key.path=value, got {raw!r}")
    parts = key.split(".")
    bad = [p for p in parts if not _SEGMENT.match(p)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a valid key in {key!r}")
    try:
        value = load_limited(text) if text.strip() else None
    except LimitExceeded as err:
        raise ValueError(f"value of {key!r}: {err.message}") from None
    except yaml.YAMLError as err:
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"value {text!r} is not valid YAML: {reason}") from None
    if parts[0] == "sweep" and len(parts) > 2:
        parts = ["sweep", ".".join(parts[1:])]  # sweep keys are `<component>.<knob>`
    return tuple(parts), value


def apply_overrides(data: Any, overrides: list[str]) -> tuple[Any, list[Override], list[tuple[int, str, str]]]:
    """Set each override's value in `data` (a copy is not made). Returns (data, applied, problems).

    Problems are (override number, key, message). Missing mappings on the way are created.
    """
    applied: list[Override] = []
    problems: list[tuple[int, str, str]] = []
    if data is None:
        data = {}
    for number, raw in enumerate(overrides, start=1):
        try:
            path, value = parse_override(raw)
        except ValueError as err:
            problems.append((number, raw.partition("=")[0].strip() or raw, str(err)))
            continue
        if not isinstance(data, dict):
            problems.append((number, ".".join(map(str, path)), "the document is not a mapping"))
            continue
        record = Override(number, path)
        node: dict[Any, Any] = data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if path[0] == "sampler" and depth == 0 and isinstance(child, str):
                child = node[part] = {"name": child}  # `sampler: tpe` is short for {name: tpe}
            if child is None:
                child = node[part] = {}
                record.created.add(path[: depth + 1])
            if not isinstance(child, dict):
                where = ".".join(map(str, path[: depth + 1]))
                problems.append((number, ".".join(map(str, path)),
                                 f"cannot set a key inside {where}, which is not a mapping"))
                break
            node = child
        else:
            node[path[-1]] = value
            applied.append(record)
    return data, applied, problems
