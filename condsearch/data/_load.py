"""load_task: a task spec (the `task:` section of a search space) to its splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from condsearch.data._builtin import digits, parity
from condsearch.data._idx import fashion_mnist
from condsearch.data._task import IN_MEMORY, Task, TaskError
from condsearch.data._user import factory, npz

LOADERS = {"parity": parity, "digits": digits, "fashion_mnist": fashion_mnist, "npz": npz}


def load_task(spec: dict[str, Any] | str | Task, near: str | Path | None = None,
              trust_code: bool = True) -> Task:
    """Load the task a spec names: a built-in data set, an .npz file or a `module:function`
    factory, imported from sys.path or else from the folder `near` (the space file's).

    A Task is returned as is. The search scores on `val`; `test` is for export and reports only.
    A factory is code: with `trust_code=False` it is refused (TaskError) and not imported.
    """
    if isinstance(spec, Task):
        return spec
    spec = {"dataset": spec} if isinstance(spec, str) else dict(spec)
    dataset = spec.get("dataset")
    if dataset in LOADERS:
        return LOADERS[dataset](spec)
    if dataset == IN_MEMORY:
        raise TaskError(f"{spec.get('name') or 'this task'} was a Task passed in memory, which "
                        "no spec can load again; pass that Task itself")
    if isinstance(dataset, str) and ":" in dataset:
        if not trust_code:
            raise TaskError(f"task.dataset: {dataset} is a 'module:function' factory (code) and "
                            "is imported only when trusted (trust_code=True)")
        return factory(spec, near)
    raise TaskError(f"unknown dataset {dataset!r}; known: {', '.join(LOADERS)} or a "
                    "'module:function' factory")
