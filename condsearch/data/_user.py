"""The user's own data: an .npz file or a `module:function` factory returning arrays."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from condsearch.data._task import Task, TaskError, as_images, make_task

KEYS = "x_train, y_train and optionally x_test, y_test (or just x, y)"


def from_arrays(name: str, arrays: Mapping[str, Any], spec: dict[str, Any]) -> Task:
    """A Task from x_train / y_train (+ x_test / y_test) or x / y arrays.

    Integer 2-D inputs are token sequences; anything else of 3 or 4 dimensions is an image.
    """
    if "x_train" in arrays and "y_train" in arrays:
        x, y = arrays["x_train"], arrays["y_train"]
    elif "x" in arrays and "y" in arrays:
        x, y = arrays["x"], arrays["y"]
    else:
        raise TaskError(f"{name}: expected arrays {KEYS}; found {sorted(arrays)}")
    test = None
    if "x_test" in arrays and "y_test" in arrays:
        test = (_inputs(np.asarray(arrays["x_test"])), np.asarray(arrays["y_test"]))
    return make_task(name, _inputs(np.asarray(x)), np.asarray(y), spec, test=test)


def _inputs(x: np.ndarray) -> np.ndarray:
    if np.issubdtype(x.dtype, np.integer) and x.ndim == 2:
        return x.astype(np.int64)
    if x.ndim in (3, 4):
        return as_images(x)
    return x


def npz(spec: dict[str, Any]) -> Task:
    path = spec.get("path")
    if not path:
        raise TaskError("npz: set task.path to the .npz file")
    if not Path(path).is_file():
        raise TaskError(f"npz: {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return from_arrays(f"npz:{Path(path).name}", arrays, spec)


def factory(spec: dict[str, Any]) -> Task:
    """Call `package.module:function(**task.kwargs)`; it returns a Task or a mapping of arrays."""
    target = spec["dataset"]
    module_name, _, function_name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise TaskError(f"{target}: cannot import the factory: {exc}") from exc
    result = function(**dict(spec.get("kwargs") or {}))
    if isinstance(result, Task):
        return result
    if isinstance(result, Mapping):
        return from_arrays(target, result, spec)
    raise TaskError(f"{target}: a factory returns a condsearch Task or a mapping of {KEYS}; "
                    f"got {type(result).__name__}")
