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
from condsearch.track._view import (
    FRONT_VIEW,
    POINTS_VIEW,
    colour_runs,
    ui_views,
    view_path,
    view_state,
    write_views,
)

__all__ = [
    "ENV_EXPERIMENT_ID", "ENV_EXPERIMENT_NAME", "ENV_RUN_ID", "ENV_TRACKING_URI",
    "FEASIBLE_TAG", "FRONT_VIEW", "PARETO_TAG", "POINTS_VIEW", "ActiveRun", "ParetoTagger",
    "TrackingChoiceError", "TrackingRequest", "TrackingTarget", "TrialRun", "absolute_uri",
    "active_run", "check_tags", "colour_runs", "end_run", "experiment_by_id",
    "experiment_by_name", "experiment_name", "flatten", "from_environment", "open_experiment",
    "parse_tags", "quiet_mlflow", "start_parent_run", "ui_views", "view_path", "view_state",
    "write_front_files", "write_views",
]
