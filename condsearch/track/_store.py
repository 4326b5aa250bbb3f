"""The MLflow store of a search: its experiment and the parent run of one invocation."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from condsearch.track._target import TrackingTarget
from condsearch.track._view import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    colour_runs,
    write_views,
)


def quiet_mlflow() -> None:
    """MLflow's store migrations and run-link lines are noise in a search's output."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def open_experiment(uri: str, name: str, artifact_dir: Path | None) -> str:
    """The id of experiment `name`, created (with artifacts under `artifact_dir`) if absent."""
    from mlflow import MlflowClient

    quiet_mlflow()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_dir.resolve().as_uri() if artifact_dir is not None else None
    # MLflow's kind of experiment: model training (machine learning), not GenAI.
    return client.create_experiment(name, artifact_location=location,
                                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


def start_parent_run(uri: str, experiment_id: str, params: dict[str, str], space_yaml: str,
                     tags: dict[str, str] | None = None,
                     nest_under: str | None = None) -> TrackingTarget:
    """Open the parent run of one `condsearch search` invocation and log its search space;
    `tags` go on it and on every run of the search, `nest_under` is an enclosing run's id.
    The experiment gets condsearch's views of the front in MLflow's UI (`_view.write_views`)."""
    import tempfile

    from mlflow import MlflowClient
    from mlflow.entities import Param

    client = MlflowClient(uri)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    own = {"mlflow.runName": f"search-{stamp}", "condsearch.role": "search"}
    if "workdir" in params:  # what tells a later search in that workdir the run is its own
        from condsearch.track._stale import search_tags

        own.update(search_tags(str(params["workdir"])))
    if nest_under is not None:
        own["mlflow.parentRunId"] = nest_under
    run = client.create_run(experiment_id, tags={**(tags or {}), **own})
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "search_space.yaml").write_text(space_yaml)
        client.log_artifact(run_id, str(Path(tmp) / "search_space.yaml"))
    _best_effort(write_views, uri, experiment_id)
    return TrackingTarget(uri=uri, experiment_id=experiment_id, parent_run_id=run_id,
                          tags=dict(tags or {}))


def end_run(target: TrackingTarget, status: str) -> None:
    """Close the search's parent run with `status`, then colour the experiment's points by the
    front they ended on (`_view.colour_runs`)."""
    from mlflow import MlflowClient

    MlflowClient(target.uri).set_terminated(target.parent_run_id, status)
    _best_effort(colour_runs, target.uri, target.experiment_id)


def _best_effort(method: Any, *args: Any) -> None:
    """Call a UI convenience (a view, run colours) that must not stop a search."""
    try:
        method(*args)
    except Exception as exc:  # noqa: BLE001 - the views only help to look at the runs
        import warnings

        from condsearch.track._trial_runs import TrackingUnavailable

        warnings.warn(f"could not update the MLflow UI's views of the front ({type(exc).__name__}"
                      f": {str(exc)[:300]}); the runs and their tags are logged",
                      TrackingUnavailable, stacklevel=3)
