"""condsearch: architecture search for conditional-computation networks.

The public API. Names are imported on first use, so `import condsearch` (and the CLI's
`validate`) stays fast and does not load torch, Optuna or MLflow until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_space": "condsearch.space",
    "SearchSpace": "condsearch.space",
    "SpaceError": "condsearch.space",
    "load_task": "condsearch.data",
    "Task": "condsearch.data",
    "TaskError": "condsearch.data",
    "build_model": "condsearch.models",
    "per_sample_flops": "condsearch.cost",
    "owners": "condsearch.cost",
    "count_params": "condsearch.cost",
    "batch1_latency_ms": "condsearch.cost",
    "fit": "condsearch.train",
    "evaluate": "condsearch.train",
    "sweep_knobs": "condsearch.train",
    "inference_knobs": "condsearch.blocks",
    "set_inference_knobs": "condsearch.blocks",
    "run_trial": "condsearch.search._trial",
    "TrialSpec": "condsearch.search._trial",
    "TrialResult": "condsearch.search._trial",
    "search": "condsearch.search",
    "load_front": "condsearch.search",
    "export_point": "condsearch.export",
    "load_exported": "condsearch.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'condsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # pragma: no cover
    from condsearch.blocks import inference_knobs, set_inference_knobs
    from condsearch.cost import batch1_latency_ms, count_params, owners, per_sample_flops
    from condsearch.data import Task, TaskError, load_task
    from condsearch.export import export_point, load_exported
    from condsearch.models import build_model
    from condsearch.search import load_front, search
    from condsearch.search._trial import TrialResult, TrialSpec, run_trial
    from condsearch.space import SearchSpace, SpaceError, load_space
    from condsearch.train import evaluate, fit, sweep_knobs
