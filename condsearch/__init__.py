"""condsearch: architecture search for conditional-computation networks.

The public API. Names are imported on first use, so `import condsearch` (and the CLI's
`validate`) stays fast and does not load torch, Optuna or MLflow until they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_space": "condsearch.space",
    "SearchSpace": "condsearch.space",
    "SpaceError": "condsearch.space",
    "Param": "condsearch.space",
    "Backbone": "condsearch.space",
    "register_backbone": "condsearch.space",
    "declare_backbone": "condsearch.space",
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
    "run_trial": "condsearch.orchestrate._trial",
    "TrialSpec": "condsearch.orchestrate._trial",
    "TrialResult": "condsearch.orchestrate._trial",
    "search": "condsearch.orchestrate",
    "Objective": "condsearch.orchestrate",
    "arch_from_params": "condsearch.orchestrate",
    "SearchSummary": "condsearch.orchestrate",
    "SearchError": "condsearch.orchestrate",
    "load_front": "condsearch.orchestrate",
    "all_points": "condsearch.orchestrate",
    "export_point": "condsearch.export",
    "load_exported": "condsearch.export",
    "evaluate_exported": "condsearch.export",
    "ExportError": "condsearch.export",
}

__all__ = sorted(_EXPORTS)
#: subpackages reachable as `condsearch.NAME` after a plain `import condsearch`, imported on first
#: use; not in __all__, so `from condsearch import *` does not load Ray (`tune`)
_SUBPACKAGES = ("tune",)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'condsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

