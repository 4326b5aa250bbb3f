"""The user's own data: an .npz file or a `module:function` factory returning arrays.

Both are cached per process (`_cache.py`): an .npz by its resolved path, mtime, size and the
task spec; a factory by the function and the task spec (its import path and kwargs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from condsearch.data._cache import cached_task, spec_key
from condsearch.data._task import Arrays, Splits, Task, TaskError, split_arrays

KEYS = "x_train, y_train and optionally x_val, y_val, x_test, y_test (or just x, y)"


def from_arrays(name: str, arrays: Mapping[str, Any], spec: dict[str, Any]) -> Task:
    """A Task from x_train / y_train (+ x_val / y_val, x_test / y_test) or x / y arrays."""
    return arrays_splits(name, arrays, spec).task()


def arrays_splits(name: str, arrays: Mapping[str, Any], spec: dict[str, Any]) -> Splits:
    """Splits of the user's arrays: a given val or test pair is used as is, a missing one carved.

    Integer 2-D inputs are token sequences; anything else of 3 or 4 dimensions is an image.
    Inputs are scaled only as `task.normalize` says (default `none`).
    """
    if "x_train" in arrays and "y_train" in arrays:
        x, y = arrays["x_train"], arrays["y_train"]
    elif "x" in arrays and "y" in arrays:
        x, y = arrays["x"], arrays["y"]
    else:
        raise TaskError(f"{name}: expected arrays {KEYS}; found {sorted(arrays)}")
    return split_arrays(name, np.asarray(x), np.asarray(y), spec,
                        val=_pair(name, arrays, "val"), test=_pair(name, arrays, "test"))


def _pair(name: str, arrays: Mapping[str, Any], split: str) -> Arrays | None:
    """The arrays `x_<split>`, `y_<split>` when both are given; an error when only one is."""
    given = [k for k in (f"x_{split}", f"y_{split}") if k in arrays]
    if not given:
        return None
    if len(given) == 1:
        raise TaskError(f"{name}: {given[0]} is given without its pair; give both "
                        f"x_{split} and y_{split}, or neither")
    return np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])


def npz(spec: dict[str, Any]) -> Task:
    """The task in `task.path`, read once per process while the file is unchanged."""
    path = spec.get("path")
    if not path:
        raise TaskError("npz: set task.path to the .npz file")
    if not Path(path).is_file():
        raise TaskError(f"npz: {path} does not exist")
    resolved = Path(path).resolve()
    stat = resolved.stat()
    frozen = spec_key(spec)
    key = None if frozen is None else ("npz", str(resolved), stat.st_mtime_ns, stat.st_size,
                                       frozen)
    return cached_task(key, lambda: _npz_splits(resolved, spec))


def _npz_splits(path: Path, spec: dict[str, Any]) -> Splits:
    """The splits of an .npz file's arrays (what the cache keeps)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return arrays_splits(f"npz:{path.name}", arrays, spec)


def factory(spec: dict[str, Any], near: str | Path | None = None) -> Task:
    """Call `package.module:function(**task.kwargs)` once per process and spec; it returns a
    Task (used as is) or a mapping of arrays. The module is imported from sys.path or else from
    the folder `near` (the search space file's)."""
    target = spec["dataset"]
    function = _import_factory(target, near)
    frozen = spec_key(spec)
    # the function itself, not only its path: another module of the same name is other data
    key = None if frozen is None else ("factory", function, frozen)
    return cached_task(key, lambda: _factory_splits(target, function, spec))


def _import_factory(target: str, near: str | Path | None) -> Callable[..., Any]:
    """The factory an import path names, found as backbones named by import path are."""
    from condsearch.space._registry import BackboneUnavailable, import_object

    try:
        function = import_object(target, near)
    except BackboneUnavailable as exc:
        raise TaskError(f"task.dataset: {exc}") from None
    if not callable(function):
        raise TaskError(f"task.dataset: {target} is a {type(function).__name__}, not a factory")
    return function


def _factory_splits(target: str, function: Callable[..., Any], spec: dict[str, Any]) -> Splits:
    """The splits of what a factory returns: its Task as is, or its arrays split by the spec."""
    result = function(**dict(spec.get("kwargs") or {}))
    if isinstance(result, Task):
        return Splits.of_task(result)
    if isinstance(result, Mapping):
        return arrays_splits(target, result, spec)
    raise TaskError(f"{target}: a factory returns a condsearch Task or a mapping of {KEYS}; "
                    f"got {type(result).__name__}")
