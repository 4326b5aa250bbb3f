"""Orchestrating a search: the study, the trials, the Pareto front."""

import sys
import types

from condsearch.search._local import SearchSummary, search
from condsearch.search._pareto import dominates, hypervolume, knee_index, non_dominated
from condsearch.search._points import PICKS, Point, all_points, load_front, pick_point
from condsearch.search._workdir import (
    SearchError,
    WorkdirState,
    read_workdir,
    state_from_storage,
)

__all__ = [
    "PICKS", "Point", "SearchError", "SearchSummary", "WorkdirState", "all_points", "dominates",
    "hypervolume", "knee_index", "load_front", "non_dominated", "pick_point", "read_workdir",
    "search", "state_from_storage",
]


class _CallableModule(types.ModuleType):
    """`condsearch.search` is both this package and the public `search()` function. Importing
    the package rebinds the attribute `condsearch.search` to it, so the package calls through
    to the function: `condsearch.search(...)` works whatever was imported first."""

    def __call__(self, *args, **kwargs) -> SearchSummary:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
