"""load_task: a task spec (the `task:` section of a search space) to its splits."""

from __future__ import annotations

from typing import Any

from condsearch.data._builtin import digits, parity
from condsearch.data._idx import fashion_mnist
from condsearch.data._task import Task, TaskError
from condsearch.data._user import factory, npz

LOADERS = {"parity": parity, "digits": digits, "fashion_mnist": fashion_mnist, "npz": npz}


def load_task(spec: dict[str, Any] | str | Task) -> Task:
    """Load the task a spec names: a built-in data set or a `module:function` factory.

    The search scores on `val`; `test` is for export and reports only.
    """
    if isinstance(spec, Task):
        return spec
    spec = {"dataset": spec} if isinstance(spec, str) else dict(spec)
    dataset = spec.get("dataset")
    if dataset in LOADERS:
        return LOADERS[dataset](spec)
    if isinstance(dataset, str) and ":" in dataset:
        return factory(spec)
    raise TaskError(f"unknown dataset {dataset!r}; known: {', '.join(LOADERS)} or a "
                    "'module:function' factory")
