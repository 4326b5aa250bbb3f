"""Closing the MLflow runs a dead search process left RUNNING: a trial's (its heartbeat stopped)
and a search's parent run (its workdir's next search finds it)."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

#: the tag a run condsearch closed as KILLED or FAILED gets: why (the trial runs' `condsearch.error`,
#: `condsearch._names.ATTR_ERROR`; `track` imports nothing of condsearch, so it is spelled here)
STALE_REASON_TAG = "condsearch.error"
#: on a search's parent run: the workdir it searched in (resolved) and the machine it ran on
WORKDIR_TAG = "condsearch.workdir"
HOST_TAG = "condsearch.host"
#: why an orphaned parent run was closed
ORPHAN_REASON = ("its search process stopped without closing it (killed, or its machine went "
                 "down); closed by the next search in the same workdir")


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


def search_tags(workdir: str) -> dict[str, str]:
    """The tags naming a search's parent run as that of `workdir` on this machine."""
    return {WORKDIR_TAG: workdir, HOST_TAG: socket.gethostname()}


def _running_children(client, experiment_id: str, run_id: str) -> list:
    """The RUNNING runs nested under `run_id`, at any depth (trial runs, their derived runs)."""
    found, todo = [], [run_id]
    while todo:
        parent = todo.pop()
        token = None
        while True:
            page = client.search_runs(
                [experiment_id],
                f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'",
                max_results=1000, page_token=token)
            found += list(page)
            todo += [run.info.run_id for run in page]
            token = page.token
            if not token:
                break
    return found


def close_running_children(uri: str, experiment_id: str, parent_run_id: str,
                           reason: str) -> list[str]:
    """Close as KILLED, tagged with `reason`, every run still RUNNING under `parent_run_id`
    (a trial run or a derived run a Ctrl-C caught between its creation and its end), as a
    search closes its own parent run. Returns the ids closed."""
    from mlflow import MlflowClient

    if not _store_exists(uri):
        return []
    client = MlflowClient(uri)
    closed = []
    for run in _running_children(client, str(experiment_id), parent_run_id):
        client.set_tag(run.info.run_id, STALE_REASON_TAG, reason[:5000])
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


def close_orphaned_searches(uri: str, experiment_id: str, workdir: str | Path,
                            reason: str = ORPHAN_REASON) -> list[str]:
    """Close as KILLED, tagged with `reason`, every parent run of a search in `workdir` on this
    machine still RUNNING, and the RUNNING runs under it; return the ids closed.

    Only a search holding `workdir`'s lock may call this: no live process then drives that
    workdir, so such a run was left by one that died (SIGKILL, a lost machine). A parent run is
    recognised by its tags (`search_tags`: the resolved workdir and this host), so the runs of
    searches in other workdirs, live or not, and on other machines sharing the MLflow server are
    never touched; a run written before these tags existed is left alone. Best effort: an MLflow
    failure is a TrackingUnavailable warning and closes nothing."""
    from condsearch.track._trial_runs import TrackingUnavailable

    if not _store_exists(uri):
        return []
    try:
        return _close_orphans(uri, str(experiment_id), str(Path(workdir).resolve()), reason)
    except Exception as exc:  # noqa: BLE001 - tracking is best effort; the study is the record
        warnings.warn(f"could not close the MLflow runs a stopped search left running in {uri} "
                      f"({type(exc).__name__}: {str(exc)[:300]})", TrackingUnavailable,
                      stacklevel=2)
        return []


def _close_orphans(uri: str, experiment_id: str, workdir: str, reason: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    host = socket.gethostname()
    query = "tags.`condsearch.role` = 'search' and attributes.status = 'RUNNING'"
    if "'" not in host:
        query += f" and tags.`{HOST_TAG}` = '{host}'"
    orphans, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        orphans += [run for run in page if run.data.tags.get(WORKDIR_TAG) == workdir
                    and run.data.tags.get(HOST_TAG) == host]
        token = page.token
        if not token:
            break
    closed = []
    for parent in orphans:
        for run in (*_running_children(client, experiment_id, parent.info.run_id), parent):
            client.set_tag(run.info.run_id, STALE_REASON_TAG, reason[:5000])
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    for run in _stranded(client, experiment_id, workdir, host):
        client.set_tag(run.info.run_id, STALE_REASON_TAG, reason[:5000])
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


def _stranded(client, experiment_id: str, workdir: str, host: str) -> list:
    """RUNNING trial and derived runs whose search run (of `workdir`, on `host`) has ended: an
    interrupt that cut their own closing short (the store locked by the write it broke)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], "attributes.status = 'RUNNING' and "
                                  "tags.`condsearch.role` != 'search'", max_results=1000,
                                  page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    seen: dict[str, object] = {}

    def search_run(run):
        for _ in range(3):  # a derived run sits under its trial's run, under the search's
            parent_id = run.data.tags.get("mlflow.parentRunId")
            if parent_id is None:
                return None
            if parent_id not in seen:
                seen[parent_id] = client.get_run(parent_id)
            run = seen[parent_id]
            if run.data.tags.get("condsearch.role") == "search":
                return run
        return None

    found = []
    for run in runs:
        owner = search_run(run)
        if (owner is not None and owner.info.status != "RUNNING"
                and owner.data.tags.get(WORKDIR_TAG) == workdir
                and owner.data.tags.get(HOST_TAG) == host):
            found.append(run)
    return found
