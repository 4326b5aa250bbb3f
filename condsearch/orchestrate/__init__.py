"""Orchestrating a search: the study, the trials, the Pareto front.

The package is `condsearch.orchestrate`; its `search()` is the public `condsearch.search`.
A sampler plugin (see `register_sampler`) imports only this package and `condsearch._names`."""

from condsearch.orchestrate._local import SearchSummary, search
from condsearch.orchestrate._objective import Objective, arch_from_params
from condsearch.orchestrate._optuna_private import set_trial_system_attr
from condsearch.orchestrate._pareto import dominates, hypervolume, knee_index, non_dominated
from condsearch.orchestrate._points import PICKS, Point, all_points, load_front, pick_point
from condsearch.orchestrate._samplers import SamplerFactory, register_sampler
from condsearch.orchestrate._workdir import (
    SearchError,
    WorkdirState,
    read_workdir,
    state_from_storage,
)

__all__ = [
    "PICKS", "Objective", "Point", "SamplerFactory", "SearchError", "SearchSummary", "WorkdirState",
    "all_points", "arch_from_params", "dominates", "hypervolume", "knee_index", "load_front", "non_dominated",
    "pick_point", "read_workdir", "register_sampler", "search", "set_trial_system_attr",
    "state_from_storage",
]

