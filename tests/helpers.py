"""Plain helpers and constants several test files share (shared fixtures are in conftest.py, the
per-sample FLOPs yardstick in flop_checks.py)."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What a task tells a model builder: the 8x8 digits images, and a parity-style token sequence.
DIGITS_IO = {"input_kind": "image", "input_shape": [1, 8, 8], "num_classes": 10,
             "vocab_size": None}
SEQUENCE_IO = {"input_kind": "sequence", "input_shape": [12], "num_classes": 2, "vocab_size": 3}

# The trial attribute that marks a derived sweep point (a trial of its own in the study).
DERIVED_FROM = "condsearch.derived_from"


# ---- search spaces -------------------------------------------------------------------------------

PROBLEM_LINE = re.compile(r"^(space\.yaml|--set):\d+: \S+: \S.*$")


def problems(text: str, overrides: list[str] | None = None) -> list[str]:
    """The problem lines of an invalid space (and a check that each reads as file:line: key: ...)."""
    from condsearch.space import SpaceError, parse_space

    with pytest.raises(SpaceError) as info:
        parse_space(textwrap.dedent(text), "space.yaml", overrides)
    message = str(info.value)
    assert "Traceback" not in message and "pydantic" not in message
    assert message.splitlines() == [str(p) for p in info.value.problems]
    for line in message.splitlines():
        assert PROBLEM_LINE.match(line), line
    return message.splitlines()


def sampled(space, n=30, seed=0):
    """(trial.params, arch) for n trials of a real study with a seeded random sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        arch = space.sample(trial)
        study.tell(trial, 0.0)
        out.append((trial.params, arch))
    return out


# ---- searches and what they leave in a workdir ---------------------------------------------------


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """`condsearch ARGS` in a fresh interpreter, its output captured."""
    return subprocess.run([sys.executable, "-m", "condsearch", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def load_study(workdir: Path, name: str):
    """The study a search named `name` left in `workdir`."""
    import optuna

    from condsearch.orchestrate._session import create_study_schema

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{workdir}/study.db"
    create_study_schema(storage)  # a search may be creating it at this moment
    return optuna.load_study(study_name=name, storage=storage)


def trained_trials(study) -> list:
    """The study's trained trials (derived sweep points are trials of their own)."""
    return [t for t in study.trials if DERIVED_FROM not in t.user_attrs]


def mlflow_runs(workdir: Path):
    """Every MLflow run a local search left in `workdir`, as MLflow's data frame."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    return mlflow.search_runs(search_all_experiments=True)


def trial_states(workdir: Path) -> list[tuple[int, str]]:
    """(number, state) of every trial, read without opening Optuna's storage (which would race
    the search process creating its schema)."""
    try:
        with sqlite3.connect(f"file:{workdir / 'study.db'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT number, state FROM trials").fetchall()
    except sqlite3.OperationalError:  # no file or no tables yet
        return []


# ---- processes and clusters -------------------------------------------------------------------


# Drivers joining the session's Ray head (conftest.ray_head): `ray start` turns on token
# authentication, and drivers on this machine read the same token.
RAY_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


def free_port() -> int:
    """A loopback port nobody listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    """Poll `check` every half second; fail with "`what` within `timeout` s" if it never holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:.0f} s")


def load_script(path: str, name: str) -> ModuleType:
    """A script of the repository (`path` from its root, e.g. an experiment's run.py) imported as
    module `name`, so a test calls its main() in process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def processes_named(prefix: str) -> list[int]:
    """PIDs of the processes running now whose command line starts with `prefix` (Ray names
    its workers by the task they run: `ray::ImplicitFunc`, `ray::RayTrainWorker`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith(prefix):
                pids.append(int(entry.name))
    return pids
