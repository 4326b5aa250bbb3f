"""Per-process caches of the user's data: every trial of a search reads an .npz file or calls a
factory once, like the built-in data sets (`_builtin.digits_arrays`, `_idx.read_idx`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from condsearch.data._task import Splits, Task

#: tasks kept per process; a search uses one, a notebook may switch between a few
MAX_ENTRIES = 4
_entries: OrderedDict[Hashable, Splits] = OrderedDict()


def cached_task(key: Hashable | None, build: Callable[[], Splits]) -> Task:
    """A Task of fresh tensors over the read-only splits `build` made once for `key`.

    A key of None (a spec holding values that cannot be hashed) builds every time.
    """
    if key is None:
        return build().task()
    splits = _entries.get(key)
    if splits is None:
        splits = build().frozen()
        _entries[key] = splits
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    else:
        _entries.move_to_end(key)
    return splits.task()


def spec_key(value: Any) -> Hashable | None:
    """A hashable form of a spec (mappings and lists nested), or None if a value is unhashable."""
    try:
        frozen = _frozen(value)
        hash(frozen)
    except TypeError:
        return None
    return frozen


def _frozen(value: Any) -> Hashable:
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    return value


def clear_cache() -> None:
    """Forget every cached task (tests; a process whose factories read changing data)."""
    _entries.clear()
