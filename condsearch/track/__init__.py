"""MLflow tracking: the parent run of a search, a child run per trial, Pareto tags and plots."""

from condsearch.track._conventions import (
    ENV_EXPERIMENT_ID,
    ENV_EXPERIMENT_NAME,
    ENV_RUN_ID,
    ENV_TRACKING_URI,
    ActiveRun,
    TrackingChoiceError,
    TrackingRequest,
    absolute_uri,
    active_run,
    check_tags,
    experiment_by_id,
    experiment_by_name,
    experiment_name,
    from_environment,
    parse_tags,
)
from condsearch.track._pareto_tags import FEASIBLE_TAG, PARETO_TAG, ParetoTagger
from condsearch.track._plots import write_front_files
from condsearch.track._store import end_run, open_experiment, quiet_mlflow, start_parent_run
from condsearch.track._target import TrackingTarget
from condsearch.track._trial_runs import TrialRun, flatten

__all__ = [
    "ENV_EXPERIMENT_ID", "ENV_EXPERIMENT_NAME", "ENV_RUN_ID", "ENV_TRACKING_URI",
    "FEASIBLE_TAG", "PARETO_TAG", "ActiveRun", "ParetoTagger", "TrackingChoiceError",
    "TrackingRequest", "TrackingTarget", "TrialRun", "absolute_uri", "active_run", "check_tags",
    "end_run", "experiment_by_id", "experiment_by_name", "experiment_name", "flatten",
    "from_environment", "open_experiment", "parse_tags", "quiet_mlflow", "start_parent_run",
    "write_front_files",
]
