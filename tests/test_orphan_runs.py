"""A search's parent run a killed driver left RUNNING is closed as KILLED, with the reason, by the
next search in the same workdir; the runs of searches in other workdirs or on other machines, and
anything `pareto` reads, are left alone."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from helpers import trial_states

from condsearch.orchestrate import all_points, search
from condsearch.track._stale import ORPHAN_REASON, close_orphaned_searches

REASON = "condsearch.error"


def parent_run(client, experiment: str, workdir: Path | None = None, host: str | None = None,
               status: str | None = None) -> str:
    tags = {"condsearch.role": "search"}
    if workdir is not None:
        tags["condsearch.workdir"] = str(workdir.resolve())
    if host is not None:
        tags["condsearch.host"] = host
    run_id = client.create_run(experiment, tags=tags).info.run_id
    if status:
        client.set_terminated(run_id, status)
    return run_id


def child_run(client, experiment: str, parent: str, role: str = "trial") -> str:
    return client.create_run(experiment, tags={"condsearch.role": role,
                                               "mlflow.parentRunId": parent}).info.run_id


def test_only_the_running_parent_runs_of_this_workdir_on_this_machine_are_closed(
        mlflow_store, tmp_path, request):
    client = mlflow.MlflowClient(mlflow_store)
    experiment = client.create_experiment(request.node.nodeid,
                                          artifact_location=(tmp_path / "a").as_uri())
    here, there, host = tmp_path / "run", tmp_path / "other", socket.gethostname()
    here.mkdir()
    orphan = parent_run(client, experiment, here, host)
    trial = child_run(client, experiment, orphan)
    derived = child_run(client, experiment, trial, "derived")
    done = child_run(client, experiment, orphan)
    client.set_terminated(done, "FINISHED")
    untouched = {
        "another workdir's live search": parent_run(client, experiment, there, host),
        "the same path on another machine": parent_run(client, experiment, here, "elsewhere"),
        "a run from before the tags": parent_run(client, experiment),
    }
    finished = parent_run(client, experiment, here, host, status="FINISHED")

    closed = close_orphaned_searches(mlflow_store, experiment, here / "." / "")

    assert sorted(closed) == sorted([orphan, trial, derived])
    for run_id in closed:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags[REASON] == ORPHAN_REASON
    for what, run_id in untouched.items():
        assert client.get_run(run_id).info.status == "RUNNING", what
    for run_id in (done, finished):
        assert client.get_run(run_id).info.status == "FINISHED"
        assert REASON not in client.get_run(run_id).data.tags
    assert close_orphaned_searches(mlflow_store, experiment, here) == []


def test_a_store_that_is_not_there_is_not_created(tmp_path):
    uri = f"sqlite:///{tmp_path}/absent/mlflow.db"
    assert close_orphaned_searches(uri, "0", tmp_path) == []
    assert not (tmp_path / "absent").exists()


SPACE = """\
name: orphaned
task: {dataset: digits, train_limit: 200}
model: {backbone: token_transformer, dim: 8, depth: {int: [1, 2]}, heads: 2, patch_size: 4}
objectives: [accuracy, flops]
train: {epochs: 2, batch_size: 64, eval_batch_size: 256}
sampler: random
"""


@pytest.mark.slow
def test_the_next_search_closes_the_parent_run_of_a_killed_driver(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "condsearch", "search", str(space), "--workdir", str(workdir),
         "--trials", "50", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 240
    while not any(s == "RUNNING" for _, s in trial_states(workdir)):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no trial started within 240 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to close anything
    proc.communicate(timeout=60)

    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    (killed,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   "tags.`condsearch.role` = 'search'")
    experiment = killed.info.experiment_id
    assert killed.info.status == "RUNNING"
    assert killed.data.tags["condsearch.workdir"] == str(workdir.resolve())
    # a live search of another workdir logging to the same store
    other = parent_run(client, experiment, tmp_path / "other", socket.gethostname())

    all_points(workdir)  # what `condsearch pareto` and `export` read: they close nothing
    assert client.get_run(killed.info.run_id).info.status == "RUNNING"

    summary = search(str(space), trials=1, workdir=workdir, progress=False)

    closed = client.get_run(killed.info.run_id)
    assert closed.info.status == "KILLED"
    assert closed.data.tags[REASON] == ORPHAN_REASON
    assert client.get_run(summary.parent_run_id).info.status == "FINISHED"
    assert client.get_run(other).info.status == "RUNNING"
    running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert [r.info.run_id for r in running] == [other]  # the killed trial's run was closed too
