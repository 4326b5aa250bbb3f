"""Fixtures several test files share. The expensive ones (a Ray cluster, an MLflow server, an MLflow
store) are started once per session and handed out to every test that asks; each test then
works in a place of its own inside them (its own experiment, study name or workdir), so no test
sees another's runs. Plain helpers are in helpers.py.

Tests marked `slow` start a Ray cluster, run a reproduction's short version, kill or interrupt a
search, or take more than about 5 s; `pytest -m "not slow"` is the inner loop, CI runs them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers import RAY_ENV, free_port, wait_until

BIN = Path(sys.executable).parent


# Trials compute on the CPUs the process may use, OMP_NUM_THREADS included (search.cpus_per_trial
# unset): one here, in this process and in every search a test starts as a subprocess.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def one_thread():
    """Every test computes on one intra-op thread. The tensors here are tiny: a second thread
    only adds synchronisation, several times slower per op on a busy 2-core machine (the FLOPs
    checks' batch-1 reference passes took minutes instead of seconds)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Where MLflow's conventions tell a search (and every subprocess it starts) to log.
MLFLOW_SETTINGS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
                   "MLFLOW_RUN_ID")


@pytest.fixture(autouse=True)
def no_mlflow_settings(monkeypatch):
    """Every test starts with none of MLflow's settings, so a search logs into its own workdir.
    `mlflow.set_tracking_uri`, which tests call to read a workdir's runs, also sets
    MLFLOW_TRACKING_URI for every later search and subprocess; that is undone after the test
    (and the developer's own settings, if any, come back at the end)."""
    for name in MLFLOW_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)  # forgets the URI a test set, and unsets the variable
    for name in MLFLOW_SETTINGS:
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def fashion_mnist():
    """Skips the test unless the real Fashion-MNIST set is installed (`.ci/run` installs it)."""
    from condsearch.data import TaskError, load_task

    try:
        load_task({"dataset": "fashion_mnist", "train_limit": 10})
    except TaskError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


# ---- MLflow --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """The URI of one SQLite MLflow store for the session: creating a store's schema costs about
    a second, so tests share it and each opens an experiment of its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-store') / 'mlflow.db'}"


@pytest.fixture
def tracking_target(mlflow_store, tmp_path, request):
    """A search's parent run, alone in an experiment of its own (named after the test, its
    artifacts under the test's tmp_path) in the shared store."""
    from condsearch.track import open_experiment, start_parent_run

    experiment = open_experiment(mlflow_store, request.node.nodeid, tmp_path / "mlartifacts")
    return start_parent_run(mlflow_store, experiment, {"space": request.node.name},
                            f"name: {request.node.name}\n")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server with artifact serving on loopback; stopped at the end of the
    session. Each test logs to an experiment of its own."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(healthy, 240, "the MLflow server did not answer")
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


# ---- Ray -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head on 127.0.0.1 with 2 CPUs, started once for the session (`ray start` takes
    10-15 s here); `ray stop` at its end. Its address, for `--address`; run drivers with
    RAY_ENV. Each test names its own study and Ray experiment."""
    pytest.importorskip("ray.tune", reason="the ray backend needs pip install 'condsearch[ray]'")
    port = free_port()
    subprocess.run(
        [BIN / "ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
         "--disable-usage-stats"], check=True, env=RAY_ENV, capture_output=True, timeout=180)
    yield f"127.0.0.1:{port}"
    subprocess.run([BIN / "ray", "stop", "--force"], env=RAY_ENV, capture_output=True, timeout=120)
