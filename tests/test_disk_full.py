"""A full disk: a trial and its derived points reach the study together or not at all, the
search stops with one line (exit 2) and closes its runs, and running it again resumes it; the
front's files are never left truncated.

A full disk is simulated without root by a file size limit (`RLIMIT_FSIZE`, `ulimit -f`) in a
child process that ignores SIGXFSZ: a write past the limit fails with EFBIG, which SQLite reports
as a "disk I/O error", as it reports ENOSPC on a real full disk as "database or disk is full"."""

import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
from helpers import DERIVED_FROM, cli, load_study, trained_trials
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from sqlalchemy import event

from condsearch.orchestrate import SearchError
from condsearch.orchestrate._keeper import FrontKeeper
from condsearch.orchestrate._optuna_private import write_trial_group
from condsearch.orchestrate._progress import SearchProgress
from condsearch.orchestrate._record import StorageFull, full_disk, record_result
from condsearch.orchestrate._session import Session
from condsearch.orchestrate._trial import DerivedPoint, TrialResult
from condsearch.track import write_front_files

State = optuna.trial.TrialState
OBJECTIVES = [("accuracy", "maximize"), ("flops", "minimize")]
KNOB = "model.components.early_exit.threshold"


def sqlite_study(path: Path, name: str = "full") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=f"sqlite:///{path}",
                               directions=["maximize", "minimize"], load_if_exists=True)


def a_result(number: int, derived: int = 4) -> TrialResult:
    return TrialResult(
        number=number, ok=True, run_id=f"run-{number}",
        metrics={"accuracy": 0.8, "flops": 120.0, "params": 50.0},
        knobs={"early_exit.threshold": 0.9},
        derived=[DerivedPoint({"early_exit.threshold": 0.5 + 0.1 * i},
                              {"accuracy": 0.7 - 0.01 * i, "flops": 90.0 - i, "params": 50.0},
                              f"run-{number}-{i}") for i in range(derived)])


def ask(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float(KNOB, 0.5, 0.95)
    return trial


def written_transactions(study: optuna.Study) -> set[int]:
    """A set that gains the number of each transaction on the study's database that writes."""
    engine = study._storage._backend.engine
    count, writing = [0], set()

    def begin(conn):
        count[0] += 1

    def execute(conn, cursor, statement, *args):
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            writing.add(count[0])

    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", execute)
    return writing


# ---- one transaction ------------------------------------------------------------------------------


def test_a_trial_and_its_derived_points_are_one_commit(tmp_path):
    study = sqlite_study(tmp_path / "study.db")
    trial = ask(study)
    writing = written_transactions(study)
    points = record_result(study, trial, {"model": {}}, {"dataset": "digits"}, a_result(0),
                           OBJECTIVES, {})
    assert len(writing) == 1
    assert [p.number for p in points] == [0, 1, 2, 3, 4]
    trials = study.get_trials(states=(State.COMPLETE,))
    assert [t.user_attrs.get(DERIVED_FROM) for t in trials] == [None, 0, 0, 0, 0]
    assert [t.params[KNOB] for t in trials[1:]] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert study.ask().number == 5  # the numbering goes on after them


@pytest.mark.parametrize("kind", ["sqlite", "in-memory"])
def test_the_group_writer_records_what_optunas_own_calls_record(kind, tmp_path):
    study = sqlite_study(tmp_path / "study.db") if kind == "sqlite" else optuna.create_study(
        directions=["maximize", "minimize"])
    own, ours = study.ask(), study.ask()
    own.set_user_attr("k", {"a": 1})
    study.tell(own, [0.5, 2.0])
    added = optuna.trial.create_trial(values=[0.4, 1.0], user_attrs={"k": 2})
    study.add_trial(added)
    numbers = write_trial_group(study, ours, {"k": {"a": 1}}, {}, State.COMPLETE, [0.5, 2.0],
                                [added])
    assert numbers == [3]
    first, second, third, fourth = study.trials
    assert (first.state, first.values, first.user_attrs) == (second.state, second.values,
                                                             second.user_attrs)
    assert (third.state, third.values, third.user_attrs) == (fourth.state, fourth.values,
                                                             fourth.user_attrs)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        write_trial_group(study, ours, {}, {}, State.FAIL)


def test_a_failure_halfway_through_the_derived_points_records_none_of_them(tmp_path, monkeypatch):
    study = sqlite_study(tmp_path / "study.db")
    trial = ask(study)
    real = RDBStorage._get_prepared_new_trial
    made: list[int] = []

    def third_fails(self, study_id, template, session):
        if len(made) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        made.append(1)
        return real(self, study_id, template, session)

    monkeypatch.setattr(RDBStorage, "_get_prepared_new_trial", third_fails)
    with pytest.raises(OSError) as info:
        record_result(study, trial, {}, {}, a_result(0), OBJECTIVES, {})
    assert len(made) == 2 and full_disk(info.value) is not None
    monkeypatch.undo()
    (frozen,) = sqlite_study(tmp_path / "study.db").trials  # as another process reads it
    assert frozen.state == State.RUNNING and frozen.user_attrs == {} and frozen.values is None
    assert ask(study).number == 1


# ---- what counts as a full disk -----------------------------------------------------------------


def _wrapped(error: BaseException) -> BaseException:
    """`error` as Optuna raises it from a failed commit: a StorageInternalError from
    SQLAlchemy's OperationalError around the driver's error."""
    from sqlalchemy.exc import OperationalError

    try:
        try:
            raise OperationalError("COMMIT", {}, error)
        except OperationalError as exc:
            raise StorageInternalError("An exception is raised during the commit.") from exc
    except StorageInternalError as exc:
        return exc


@pytest.mark.parametrize("error, full", [
    (_wrapped(sqlite3.OperationalError("database or disk is full")), True),
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EFBIG, "File too large"), True),
    (_wrapped(sqlite3.OperationalError("database is locked")), False),
    (ValueError("no finite values"), False),
    # an I/O error is a full disk only when the disk has no room (it has here)
    (_wrapped(sqlite3.OperationalError("disk I/O error")), False),
])
def test_a_full_disk_is_told_from_other_failures(error, full, tmp_path):
    found = full_disk(error, f"sqlite:///{tmp_path}/study.db")
    assert (found is not None) == full
    if full:
        where, detail = found
        assert where == str(tmp_path / "study.db")
        assert "sqlalche.me" not in detail and detail


def test_the_message_is_one_line_that_says_what_to_do():
    message = str(StorageFull("/w/study.db", "database or disk is full", 3))
    assert message == ("the disk holding /w/study.db is full: database or disk is full; 3 "
                       "completed trials are kept; free space and run the same command to "
                       "resume")
    assert isinstance(StorageFull("x", "y", None), SearchError)
    assert "1 completed trial is kept" in str(StorageFull("x", "y", 1))


def test_a_session_stops_on_a_full_disk_and_records_the_trial_as_failed(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/study.db"
    study = sqlite_study(tmp_path / "study.db")
    done = ask(study)
    record_result(study, done, {}, {}, a_result(0, derived=1), OBJECTIVES, {})
    space = SimpleNamespace(task={"dataset": "digits"}, objectives=OBJECTIVES, constraints={})
    keeper = FrontKeeper(OBJECTIVES, {}, [0.0, 1000.0])
    session = Session(space, study, keeper, None, SearchProgress(1, enabled=False), 0,
                      SimpleNamespace(storage=url))
    trial = ask(study)

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RDBStorage, "_get_prepared_new_trial", full)
    with pytest.raises(StorageFull) as info:
        session.record(trial, {}, a_result(trial.number), 1.0)
    assert str(info.value) == (
        f"the disk holding {tmp_path}/study.db is full: database or disk is full; 1 completed "
        "trial is kept; free space and run the same command to resume")
    assert keeper.points == [] and session.completed == 0
    failed = study.trials[trial.number]
    assert failed.state == State.FAIL and "is full" in failed.user_attrs["condsearch.error"]
    assert [t.number for t in study.trials if DERIVED_FROM in t.user_attrs] == [1]


RECORD_IN_A_SMALL_FILE = textwrap.dedent("""\
    import resource, signal, sys, os
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    import optuna
    from condsearch.orchestrate._record import record_result, storage_full
    sys.path.insert(0, sys.argv[2])
    from test_disk_full import OBJECTIVES, a_result, ask, sqlite_study
    study = sqlite_study(sys.argv[1])
    trial = ask(study)
    size = os.path.getsize(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))  # not one page more
    big = {"model": {"notes": "x" * 20000}}
    try:
        record_result(study, trial, big, {}, a_result(trial.number), OBJECTIVES, {})
    except Exception as exc:
        print(storage_full(exc, study, "sqlite:///" + sys.argv[1]))
    """)


def test_a_write_past_the_file_size_limit_leaves_no_partial_group(tmp_path):
    path = tmp_path / "study.db"
    record_result(sqlite_study(path), ask(sqlite_study(path)), {}, {}, a_result(0), OBJECTIVES,
                  {})
    done = subprocess.run([sys.executable, "-c", RECORD_IN_A_SMALL_FILE, str(path),
                           str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"the disk holding {path} is full: disk I/O error (the file "
                                  "size limit of"), done.stdout
    assert "1 completed trial is kept" in done.stdout
    trials = sqlite_study(path).trials
    assert [(t.number, t.state) for t in trials] == [(n, State.COMPLETE) for n in range(5)] + [
        (5, State.RUNNING)]
    assert trials[5].user_attrs == {}
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# ---- a whole search on a full disk ------------------------------------------------------------

SPACE = """\
name: full_disk
task: {dataset: digits, train_limit: 200}
model:
  backbone: token_transformer
  dim: 8
  depth: 2
  heads: 2
  patch_size: 4
  components:
    early_exit: {enabled: true, threshold: {float: [0.5, 0.95]}}
objectives: [accuracy, flops]
train: {epochs: 1, batch_size: 64, eval_batch_size: 256}
sampler: random
sweep: {early_exit.threshold: [0.6, 0.7, 0.8, 0.9]}
search: {trials: 1, seed: 1}
"""

# `condsearch ARGS` in a process whose files may not grow past LIMIT bytes.
LIMITED_CLI = textwrap.dedent("""\
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from condsearch.cli import main
    sys.argv = ["condsearch", *sys.argv[2:]]
    main()
    """)

# Room for about two trials (each with its four derived points) past the study as it starts.
ROOM = 16384 + 100


@pytest.mark.slow
def test_a_search_on_a_full_disk_stops_with_one_line_and_resumes(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    workdir = tmp_path / "run"
    workdir.mkdir()
    db = workdir / "study.db"
    sqlite_study(db, "full_disk")
    # Padding makes the study the largest file the search writes, so it is the one that fills:
    # MLflow's store and the weights stay under the limit, as on a disk that fills with the
    # study on it and MLflow elsewhere.
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE padding (x BLOB)")
        con.execute("INSERT INTO padding VALUES (zeroblob(2000000))")
    limit = os.path.getsize(db) + ROOM
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_CLI, str(limit), "search", str(space), "--workdir",
         str(workdir), "--trials", "30", "--quiet"],
        capture_output=True, text=True, timeout=300)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "is full" in line]
    assert len(lines) == 1 and lines[0] == done.stderr.strip().splitlines()[-1]
    assert lines[0].startswith(f"the disk holding {db} is full: ")
    assert lines[0].endswith("free space and run the same command to resume")

    study = load_study(workdir, "full_disk")
    trained = trained_trials(study)
    complete = [t for t in trained if t.state == State.COMPLETE]
    assert f"; {len(complete)} completed trial" in lines[0]
    assert 1 <= len(complete) < 30
    derived = [t for t in study.trials if DERIVED_FROM in t.user_attrs]
    assert sorted(t.user_attrs[DERIVED_FROM] for t in derived) == sorted(
        t.number for t in complete for _ in range(4))  # each complete trial has all four
    assert all(t.state == State.COMPLETE for t in derived)
    before = {t.number: t.values for t in complete}

    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("condsearch.role") == "search"]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["condsearch.error"] == lines[0]
    numbers = {t.number for t in complete}
    for run in [r for r in runs if r.data.tags.get("condsearch.role") == "trial"]:
        # a run shows FINISHED only for a trial the study holds as complete
        number = int(run.data.tags["condsearch.trial"])
        assert (run.info.status == "FINISHED") == (number in numbers), (number, run.info.status)
    recorded = {t.user_attrs["condsearch.run_id"] for t in complete + derived}
    for run in runs:
        if run.info.run_id not in recorded:
            assert run.info.status != "FINISHED" and "condsearch.pareto" not in run.data.tags

    # with the space back, the same command goes on where it stopped
    again = cli("search", str(space), "--workdir", str(workdir), "--trials", "1", "--quiet")
    assert again.returncode == 0, again.stderr
    after = load_study(workdir, "full_disk")
    assert {t.number: t.values for t in trained_trials(after) if t.number in before} == before
    assert sum(t.state == State.COMPLETE for t in trained_trials(after)) == len(before) + 1
    parents = client.search_runs([parent.info.experiment_id], "tags.`condsearch.role` = 'search'")
    assert sorted(r.info.status for r in parents) == ["FAILED", "FINISHED"]


# ---- the front's files ----------------------------------------------------------------------------


def _points():
    from condsearch.orchestrate._points import Point

    return [Point(n, n, False, {"accuracy": 0.5 + 0.1 * n, "flops": 100.0 * (n + 1)}, {}, {}, {},
                  {}, None, None, True, on_front=True) for n in range(3)]


def test_the_front_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from condsearch.track import _plots

    written = write_front_files(tmp_path, _points(), OBJECTIVES, "before")
    assert sorted(p.name for p in written) == ["pareto.html", "pareto.json", "pareto.png"]
    old = {p.name: p.read_bytes() for p in written}
    assert len(json.loads(old["pareto.json"])) == 3

    def half_then_fail(path, *args):
        Path(path).write_text("<html><body>half a plo")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_plots, "_html", half_then_fail)
    with pytest.raises(OSError):
        write_front_files(tmp_path, _points()[:1], OBJECTIVES, "after")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old  # no temporary file left
