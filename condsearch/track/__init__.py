"""MLflow tracking: the parent run of a search, a child run per trial, Pareto tags and plots."""

from condsearch.track._pareto_tags import FEASIBLE_TAG, PARETO_TAG, ParetoTagger
from condsearch.track._plots import write_front_files
from condsearch.track._store import end_run, open_experiment, quiet_mlflow, start_parent_run
from condsearch.track._target import TrackingTarget
from condsearch.track._trial_runs import TrialRun, flatten

__all__ = [
    "FEASIBLE_TAG", "PARETO_TAG", "ParetoTagger", "TrackingTarget", "TrialRun", "end_run",
    "flatten", "open_experiment", "quiet_mlflow", "start_parent_run", "write_front_files",
]
