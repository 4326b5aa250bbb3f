"""Closing the MLflow run of a trial whose search process died (its heartbeat stopped)."""

from __future__ import annotations

from pathlib import Path

#: the tag a stale trial's run gets: why it was closed as KILLED
STALE_REASON_TAG = "condsearch.error"


def _store_exists(uri: str) -> bool:
    """Whether a store can be opened without creating one: a SQLite file or a folder that is
    not on this machine (another machine's workdir) is left alone."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).exists()
    if uri.startswith("file:"):
        return Path(uri[len("file://"):] if uri.startswith("file://") else uri[5:]).exists()
    if "://" not in uri:
        return Path(uri).exists()
    return True


def close_stale_trial_runs(uri: str, experiment_id: str, trial_number: int, reason: str,
                           run_id: str | None = None, parent_run_id: str | None = None
                           ) -> list[str]:
    """Close as KILLED, tagged with `reason`, the still-RUNNING MLflow runs of a stale trial:
    `run_id` when the trial recorded it, else the run tagged `condsearch.trial` = its number
    (under `parent_run_id` when known) in the experiment, and the derived runs under it.
    Returns the ids closed; raises what MLflow raises (the caller treats this as best effort)."""
    from mlflow import MlflowClient

    if not _store_exists(uri):
        return []
    client = MlflowClient(uri)
    if run_id is not None:
        runs = [client.get_run(run_id)]
    else:
        query = f"tags.`condsearch.trial` = '{trial_number}' and tags.`condsearch.role` = 'trial'"
        if parent_run_id:
            query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
        runs = client.search_runs([experiment_id], query, max_results=100)
    closed = []
    for run in runs:
        children = client.search_runs(
            [run.info.experiment_id],
            f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and attributes.status = 'RUNNING'",
            max_results=1000)
        for each in (run, *children):
            if each.info.status != "RUNNING":
                continue
            client.set_tag(each.info.run_id, STALE_REASON_TAG, reason[:5000])
            client.set_terminated(each.info.run_id, "KILLED")
            closed.append(each.info.run_id)
    return closed
