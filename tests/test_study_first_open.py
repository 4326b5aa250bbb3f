"""Processes that open one fresh study database at the same moment (two drivers, or a search and
a reader such as `condsearch pareto`) all get the one study: none dies on the schema's creation."""

import multiprocessing
import time

import optuna
from helpers import ROOT

from condsearch.orchestrate._session import open_study
from condsearch.space import load_space

SPACE = ROOT / "search_spaces" / "digits_early_exit.yaml"
PROCESSES = 4
ROUNDS = 8


def _open_at(url: str, start: float, results) -> None:
    space = load_space(SPACE)
    while time.time() < start:
        pass
    try:
        open_study(space, url, seed=0)
        results.put("ok")
    except Exception as error:  # noqa: BLE001 - the failure is what the test reports
        results.put(f"{type(error).__name__}: {str(error)[:200]}")


def test_simultaneous_first_opens_of_a_study_database_all_succeed(tmp_path):
    fork = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        url = f"sqlite:///{tmp_path}/study{round_}.db"
        results = fork.Queue()
        start = time.time() + 0.5
        workers = [fork.Process(target=_open_at, args=(url, start, results))
                   for _ in range(PROCESSES)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert outcomes == ["ok"] * PROCESSES, f"round {round_}: {outcomes}"
        assert optuna.get_all_study_names(url) == [load_space(SPACE).name]
