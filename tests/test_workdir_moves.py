"""A workdir can move: `condsearch.json` records the stores inside it relative to it
(`sqlite:///{workdir}/study.db`), so a copied or moved workdir resumes, shows its front and
exports from its new place, with its own files, and never touches the original's (its study, its
MLflow store, its artifacts; MLflow's artifact root follows the workdir). A state file written
before, with absolute paths, reads the same way.

A damaged workdir is refused in one line (exit 2) before anything is created or reset: an empty,
truncated, corrupt or foreign `study.db`, a corrupt or emptied `mlflow.db`, a corrupt
`condsearch.json`. A study gone from its storage is started afresh only with `--new-study`, and
the earlier study's front tags in MLflow are then retired so they are never taken for the new
front."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from helpers import cli, load_study, trained_trials
from mlflow import MlflowClient
from typer.testing import CliRunner

from condsearch.orchestrate import SearchError, WorkdirState, read_workdir, search
from condsearch.orchestrate._workdir import STATE_FILE, portable_uri, read_state, write_state

SPACE = """\
name: moving
task: {dataset: digits, train_limit: 200}
model:
  backbone: token_transformer
  dim: 8
  depth: 1
  heads: 2
  patch_size: 4
  components:
    early_exit:
      enabled: {choice: [true, false]}
      threshold: {float: [0.5, 0.95]}
objectives: [accuracy, flops]
train: {epochs: 1, batch_size: 64, lr: 5.0e-3, eval_batch_size: 128}
sampler: random
sweep: {early_exit.threshold: [0.6]}
search: {trials: 2, seed: 3}
"""


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (dot files too) with its sha256: equal snapshots mean
    byte-identical files and none added or removed."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def uri(workdir: Path) -> str:
    return f"sqlite:///{workdir.resolve() / 'mlflow.db'}"


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(SPACE)
    return path


@pytest.fixture(scope="module")
def searched(space, tmp_path_factory) -> Path:
    """A finished one-trial search (two points with its swept knob); tests copy it, none
    changes it."""
    workdir = tmp_path_factory.mktemp("original") / "run"
    search(str(space), trials=1, workdir=workdir, progress=False)
    return workdir


@pytest.fixture
def copied(searched, tmp_path) -> Path:
    """A copy of the finished search, as `cp -r` (shutil.copytree) makes it."""
    return Path(shutil.copytree(searched, tmp_path / "copy"))


# ---- the state file ---------------------------------------------------------------------------


def test_the_workdirs_own_stores_are_recorded_relative_to_it(searched):
    data = json.loads((searched / STATE_FILE).read_text())
    assert data["storage"] == "sqlite:///{workdir}/study.db"
    assert data["tracking_uri"] == "sqlite:///{workdir}/mlflow.db"
    assert data["format"] == 2
    state = read_workdir(searched)
    assert state.storage == f"sqlite:///{searched.resolve() / 'study.db'}"
    assert state.tracking_uri == uri(searched)


def test_stores_outside_the_workdir_are_recorded_as_given(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    for storage, tracking in [("postgresql://u@db/optuna", "http://mlflow:5000"),
                              (f"sqlite:///{tmp_path / 'shared.db'}", f"sqlite:///{tmp_path}/t.db"),
                              (f"sqlite:///{workdir}/sub/s.db?timeout=60",
                               (workdir / "mlruns").as_uri())]:
        state = WorkdirState("s", storage, tracking, "1", "s", [["accuracy", "maximize"]])
        write_state(workdir, state)
        assert read_state(workdir) == state
    recorded = json.loads((workdir / STATE_FILE).read_text())
    assert recorded["storage"] == "sqlite:///{workdir}/sub/s.db?timeout=60"
    assert recorded["tracking_uri"] == "file://{workdir}/mlruns"
    assert portable_uri("http://mlflow:5000", workdir) == "http://mlflow:5000"


def test_an_old_state_file_with_absolute_paths_reads_as_the_copys_own(copied, searched):
    old = {**json.loads((copied / STATE_FILE).read_text()),
           "storage": f"sqlite:///{searched.resolve()}/study.db",
           "tracking_uri": uri(searched)}
    del old["format"]
    (copied / STATE_FILE).write_text(json.dumps(old))
    state = read_workdir(copied)
    assert state.storage == f"sqlite:///{copied.resolve()}/study.db"
    assert state.tracking_uri == uri(copied)
    # Without the copy's own files it still never names the original's.
    (copied / "study.db").unlink()
    (copied / "mlflow.db").unlink()
    state = read_state(copied)
    assert state.storage == f"sqlite:///{copied.resolve()}/study.db"
    assert state.tracking_uri == uri(copied)


def test_an_old_state_file_naming_a_shared_store_keeps_it(tmp_path):
    shared, workdir = tmp_path / "shared", tmp_path / "run"
    shared.mkdir(), workdir.mkdir()
    old = {"study_name": "s", "storage": f"sqlite:///{shared}/study.db",
           "tracking_uri": f"sqlite:///{shared}/mlflow.db", "experiment_id": "1",
           "space_name": "s", "objectives": [["accuracy", "maximize"]]}
    (workdir / STATE_FILE).write_text(json.dumps(old))
    state = read_state(workdir)
    assert (state.storage, state.tracking_uri) == (old["storage"], old["tracking_uri"])


# ---- a copied or moved workdir ----------------------------------------------------------------


@pytest.mark.slow
def test_a_copied_workdir_resumes_shows_and_exports_from_its_own_files(space, searched, copied,
                                                                      tmp_path):
    original = snapshot(searched)
    before = len(trained_trials(load_study(copied, "moving")))
    summary = search(str(space), trials=1, workdir=copied, progress=False)
    assert summary.tracking_uri == uri(copied)
    assert len(trained_trials(load_study(copied, "moving"))) == before + 1
    assert len(trained_trials(load_study(searched, "moving"))) == before
    # MLflow's artifact root followed the copy: new and old runs' artifacts are the copy's.
    client = MlflowClient(uri(copied))
    artifacts = (copied.resolve() / "mlartifacts").as_uri()
    runs = client.search_runs([read_workdir(copied).experiment_id])
    assert runs and all(r.info.artifact_uri.startswith(artifacts + "/") for r in runs)
    assert {a.path for a in client.list_artifacts(summary.parent_run_id)} >= {"pareto.json"}

    shown = cli("pareto", "--workdir", str(copied), "--json")
    assert shown.returncode == 0, shown.stderr
    assert {p["number"] for p in json.loads(shown.stdout)}
    exported = cli("export", "--workdir", str(copied), "--pick", "knee", "--out",
                   str(tmp_path / "knee"))
    assert exported.returncode == 0, exported.stderr
    metrics = json.loads((tmp_path / "knee" / "metrics.json").read_text())
    assert metrics["tracking_uri"] == uri(copied)
    assert snapshot(searched) == original  # byte-identical, nothing added


@pytest.mark.slow
def test_a_moved_workdir_resumes_and_exports_from_its_new_place(space, tmp_path):
    first = tmp_path / "a" / "run"
    search(str(space), trials=1, workdir=first, progress=False)
    moved = tmp_path / "b" / "run"
    moved.parent.mkdir()
    os.rename(first, moved)
    # The study database alone (`--storage`) finds the MLflow store that moved beside it.
    by_storage = run_cli("export", "--storage", f"sqlite:///{moved}/study.db", "--pick", "knee",
                         "--out", str(tmp_path / "by_storage"))
    assert by_storage.exit_code == 0, by_storage.output
    search(str(space), trials=1, workdir=moved, progress=False)
    assert len(trained_trials(load_study(moved, "moving"))) == 2
    assert not first.exists()
    exported = cli("export", "--workdir", str(moved), "--pick", "min-flops", "--out",
                   str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "weights.safetensors").is_file()


def test_a_trial_running_when_the_workdir_was_copied_is_closed_in_the_copy_only(
        space, searched, tmp_path, monkeypatch):
    from condsearch._names import ATTR_RUN, ATTR_TRACKING
    from condsearch.orchestrate import set_trial_system_attr

    original = Path(shutil.copytree(searched, tmp_path / "original"))
    state = read_workdir(original)
    client = MlflowClient(state.tracking_uri)
    parent = client.search_runs([state.experiment_id], "tags.`condsearch.role` = 'search'")[0]
    run = client.create_run(state.experiment_id, tags={
        "mlflow.parentRunId": parent.info.run_id, "condsearch.role": "trial"})
    study = optuna.load_study(study_name="moving", storage=state.storage)
    trial = study.ask()  # the original's search is running it
    trial.set_user_attr(ATTR_RUN, run.info.run_id)
    set_trial_system_attr(study, trial, ATTR_TRACKING, {
        "uri": state.tracking_uri, "experiment_id": state.experiment_id,
        "parent_run_id": parent.info.run_id})
    copy = Path(shutil.copytree(original, tmp_path / "copy"))
    kept = snapshot(original)

    monkeypatch.setenv("CONDSEARCH_GRACE_S", "0.001")
    time.sleep(0.01)
    search(str(space), trials=1, workdir=copy, progress=False)
    stale = load_study(copy, "moving").trials[trial.number]
    assert stale.state == optuna.trial.TrialState.FAIL
    assert MlflowClient(uri(copy)).get_run(run.info.run_id).info.status == "KILLED"
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    assert snapshot(original) == kept


# ---- damaged workdirs: one line, exit 2, nothing created or reset -----------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(3000))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _no_tables(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 7")  # a valid SQLite file holding no table


def _truncated(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _smashed_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    for page in range(1, len(data) // size):
        data[page * size:page * size + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def _other_studies(path: Path) -> None:
    path.unlink()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="someone_else", storage=f"sqlite:///{path}")


def _not_optuna(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")


def _state(text: str):
    return lambda path: (path.parent / STATE_FILE).write_text(text)


def _state_edit(**changes):
    def edit(path: Path) -> None:
        data = json.loads((path.parent / STATE_FILE).read_text())
        data.update(changes)
        (path.parent / STATE_FILE).write_text(json.dumps({k: v for k, v in data.items()
                                                          if v is not None}))
    return edit


DAMAGE = {
    "study.db empty (0 bytes)": ("study.db", _empty, "study.db is empty"),
    "study.db without tables": ("study.db", _no_tables, "study.db is empty"),
    "study.db garbage": ("study.db", _garbage, "not an SQLite database"),
    "study.db truncated": ("study.db", _truncated, "truncated"),
    "study.db corrupt pages": ("study.db", _smashed_pages, "is corrupt"),
    "study.db of other studies": ("study.db", _other_studies, "holds no study 'moving'"),
    "study.db not Optuna's": ("study.db", _not_optuna, "not an Optuna study database"),
    "mlflow.db garbage": ("mlflow.db", _garbage, "not an SQLite database"),
    "mlflow.db empty": ("mlflow.db", _empty, "mlflow.db is empty"),
    "mlflow.db not MLflow's": ("mlflow.db", _not_optuna, "not an MLflow database"),
    "condsearch.json bad JSON": ("study.db", _state('{"study_name": "mov'), "not valid JSON"),
    "condsearch.json empty": ("study.db", _state(""), "(empty)"),
    "condsearch.json a list": ("study.db", _state("[1, 2]"), "a JSON list"),
    "condsearch.json wrong type": ("study.db", _state_edit(storage=5), "storage is 5"),
    "condsearch.json missing key": ("study.db", _state_edit(tracking_uri=None),
                                    "missing tracking_uri"),
    "condsearch.json bad objectives": ("study.db", _state_edit(objectives=[["accuracy"]]),
                                       "objectives"),
}


def run_cli(*args: str):
    """The `condsearch` command in this process (what `python -m condsearch` runs)."""
    from condsearch.cli import app

    return CliRunner().invoke(app, list(args))


def one_line_exit_2(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_workdir_is_one_line_and_nothing_is_created_or_reset(case, space, copied,
                                                                       tmp_path):
    name, damage, expected = DAMAGE[case]
    damage(copied / name)
    before = snapshot(tmp_path)
    for args in (["search", str(space), "--trials", "1", "--quiet"], ["pareto"],
                 ["export", "--pick", "knee", "--out", str(tmp_path / "out")]):
        line = one_line_exit_2(run_cli(*args, "--workdir", str(copied)))
        assert expected in line, (args[0], line)
    with pytest.raises(SearchError, match="corrupt|empty|truncated|holds no|not an"):
        read_workdir(copied)  # what `condsearch ui` reads first
    assert snapshot(tmp_path) == before


def test_a_real_process_refuses_a_corrupt_study_in_one_line(space, copied, tmp_path):
    _garbage(copied / "study.db")
    before = snapshot(tmp_path)
    done = cli("search", str(space), "--trials", "1", "--workdir", str(copied))
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines() == [
        f"{copied.resolve() / 'study.db'}: the study database is not an SQLite database "
        "(corrupt or overwritten); restore it from a backup, or use another --workdir"]
    assert snapshot(tmp_path) == before


def test_a_study_storage_that_is_not_a_study_is_refused_by_pareto_storage(copied, tmp_path):
    _not_optuna(copied / "study.db")
    before = snapshot(tmp_path)
    for storage in (f"sqlite:///{copied / 'study.db'}", f"sqlite:///{tmp_path / 'none.db'}"):
        line = one_line_exit_2(run_cli("pareto", "--storage", storage))
        assert "Optuna" in line or "no such file" in line
    assert snapshot(tmp_path) == before


# ---- --new-study ------------------------------------------------------------------------------


def test_a_new_study_needs_new_study_and_the_old_front_tags_are_retired(space, copied):
    old_front = {r.info.run_id for r in MlflowClient(uri(copied)).search_runs(
        [read_workdir(copied).experiment_id], "tags.`condsearch.pareto` = 'true'")}
    assert old_front
    (copied / "study.db").unlink()
    before = snapshot(copied)
    line = one_line_exit_2(run_cli("search", str(space), "--trials", "1", "--quiet",
                                   "--workdir", str(copied)))
    assert "study.db is missing" in line and "--new-study" in line
    with pytest.raises(SearchError, match="--new-study"):
        search(str(space), trials=1, workdir=copied, progress=False)
    assert snapshot(copied) == before  # no study.db created

    summary = search(str(space), trials=1, workdir=copied, progress=False, new_study=True)
    study = load_study(copied, "moving")
    assert len(study.trials) >= 1 and len(trained_trials(study)) == 1
    new_runs = {t.user_attrs.get("condsearch.run_id") for t in study.trials}
    client = MlflowClient(summary.tracking_uri)
    experiment = read_workdir(copied).experiment_id
    front = {r.info.run_id for r in client.search_runs(
        [experiment], "tags.`condsearch.pareto` = 'true'")}
    assert front and front <= new_runs and not front & old_front
    for run_id in old_front:
        tags = client.get_run(run_id).data.tags
        assert tags["condsearch.pareto"] == "false"
        assert tags["condsearch.earlier_study_front"] == "true"
    shown = run_cli("pareto", "--workdir", str(copied), "--json", "--all")
    assert shown.exit_code == 0, shown.output
    assert {p["number"] for p in json.loads(shown.stdout)} == {
        t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}

    line = one_line_exit_2(run_cli("search", str(space), "--trials", "1", "--quiet",
                                   "--new-study", "--workdir", str(copied)))
    assert "still holds the study 'moving'" in line
