"""The MLflow store of a search: its experiment and the parent run of one invocation."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from condsearch.track._target import TrackingTarget


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
    return client.create_experiment(name, artifact_location=location)


def start_parent_run(uri: str, experiment_id: str, params: dict[str, str], space_yaml: str,
                     tags: dict[str, str] | None = None,
                     nest_under: str | None = None) -> TrackingTarget:
    """Open the parent run of one `condsearch search` invocation and log its search space;
    `tags` go on it and on every run of the search, `nest_under` is an enclosing run's id."""
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
    return TrackingTarget(uri=uri, experiment_id=experiment_id, parent_run_id=run_id,
                          tags=dict(tags or {}))


def end_run(target: TrackingTarget, status: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(target.uri).set_terminated(target.parent_run_id, status)
