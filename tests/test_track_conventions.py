"""MLflow's conventions, as a user of MLflow expects them: MLFLOW_TRACKING_URI,
MLFLOW_EXPERIMENT_NAME and MLFLOW_EXPERIMENT_ID, any experiment name, tags on every run, and a
search started inside `mlflow.start_run()` nesting under it. Real searches, real SQLite stores.
conftest's `no_mlflow_settings` starts each test without MLflow's variables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
from helpers import cli
from mlflow import MlflowClient

from condsearch.orchestrate import SearchError, read_workdir, search
from condsearch.track import absolute_uri, parse_tags

ENV_NAMES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
             "MLFLOW_RUN_ID")

SPACE = """\
name: tiny_conventions
task: {dataset: digits, train_limit: 200}
model:
  backbone: token_transformer
  dim: 16
  depth: 1
  heads: 4
  patch_size: 4
  components:
    early_exit:
      enabled: true
      threshold: {float: [0.5, 0.95]}
objectives: [accuracy, flops]
train: {epochs: 1, batch_size: 64, lr: 5.0e-3, eval_batch_size: 128}
sampler: random
sweep: {early_exit.threshold: [0.7]}
search: {trials: 2, seed: 5}
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    return {**env, **extra}


def write_space(folder: Path) -> Path:
    path = folder / "space.yaml"
    path.write_text(SPACE)
    return path


def runs_in(uri: str) -> list:
    """Every run of every experiment in the store at `uri`."""
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000)


def by_role(runs: list, role: str) -> list:
    return [r for r in runs if r.data.tags.get("condsearch.role") == role]


# ---- one CLI search with MLFLOW_TRACKING_URI, --experiment and --tag ---------------------------


@pytest.fixture(scope="module")
def cli_search(tmp_path_factory) -> tuple[Path, Path, str]:
    """(folder, workdir, the store's absolute URI) of one two-trial CLI search that logs where
    MLFLOW_TRACKING_URI says (a path relative to its current directory)."""
    folder = tmp_path_factory.mktemp("conventions")
    workdir = folder / "run"
    done = cli("search", str(write_space(folder)), "--workdir", str(workdir), "--quiet",
               "--experiment", "Team NAS / fashion", "--tag", "team=nas", "--tag", "stage=dev",
               cwd=folder, env=clean_env(MLFLOW_TRACKING_URI="sqlite:///elsewhere.db"))
    assert done.returncode == 0, done.stderr
    return folder, workdir, f"sqlite:///{folder / 'elsewhere.db'}"


def test_mlflow_tracking_uri_is_where_a_cli_search_logs(cli_search):
    folder, workdir, uri = cli_search
    assert not (workdir / "mlflow.db").exists()
    runs = runs_in(uri)
    assert len(by_role(runs, "search")) == 1 and len(by_role(runs, "trial")) == 2
    state = json.loads((workdir / "condsearch.json").read_text())
    assert state["tracking_uri"] == uri  # recorded absolute: it means the same from anywhere
    experiment = MlflowClient(uri).get_experiment(state["experiment_id"])
    assert state["experiment_name"] == experiment.name == "Team NAS / fashion"


def test_any_experiment_name_mlflow_accepts_holds_the_runs(cli_search):
    _, _, uri = cli_search
    experiment = MlflowClient(uri).get_experiment_by_name("Team NAS / fashion")
    runs = MlflowClient(uri).search_runs([experiment.experiment_id])
    assert {r.data.tags["condsearch.role"] for r in runs} == {"search", "trial", "derived"}
    assert MlflowClient(uri).get_experiment_by_name("tiny_conventions") is None


def test_a_tag_is_on_the_parent_run_and_every_trial_and_derived_run(cli_search):
    _, _, uri = cli_search
    runs = runs_in(uri)
    assert len(by_role(runs, "derived")) == 2
    for run in runs:
        assert run.data.tags["team"] == "nas" and run.data.tags["stage"] == "dev"
    parent = by_role(runs, "search")[0]
    trials = by_role(runs, "trial")
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}


def test_pareto_export_and_ui_find_the_recorded_store_without_the_variable(cli_search,
                                                                          tmp_path):
    folder, workdir, uri = cli_search
    # From another directory, with the variable unset and then pointing somewhere else.
    shown = cli("pareto", "--workdir", str(workdir), "--json", cwd=tmp_path, env=clean_env())
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)
    elsewhere = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'other.db'}")
    exported = cli("export", "--workdir", str(workdir), "--pick", "knee", "--out",
                   str(tmp_path / "knee"), cwd=tmp_path, env=elsewhere)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "knee" / "weights.safetensors").is_file()
    assert json.loads((tmp_path / "knee" / "metrics.json").read_text())["tracking_uri"] == uri

    from condsearch.cli import ui_command

    command = ui_command(read_workdir(workdir), 5123)
    assert command[command.index("--backend-store-uri") + 1] == uri


def test_a_resumed_search_keeps_its_recorded_store_over_a_changed_environment(cli_search,
                                                                             tmp_path):
    folder, workdir, uri = cli_search
    other = f"sqlite:///{tmp_path / 'other.db'}"
    done = cli("search", str(folder / "space.yaml"), "--workdir", str(workdir), "--trials", "1",
               cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=other,
                                           MLFLOW_EXPERIMENT_NAME="someone else's"))
    assert done.returncode == 0, done.stderr
    assert f"keeps logging to {uri}" in done.stderr
    assert len(by_role(runs_in(uri), "search")) == 2
    assert not (tmp_path / "other.db").exists()
    assert read_workdir(workdir).experiment_name == "Team NAS / fashion"


@pytest.mark.parametrize("option", [["--tracking-uri", "sqlite:///moved.db"],
                                    ["--experiment", "another"]])
def test_a_flag_contradicting_the_record_is_refused_in_one_line(cli_search, tmp_path, option):
    folder, workdir, uri = cli_search
    before = read_workdir(workdir)
    done = cli("search", str(folder / "space.yaml"), "--workdir", str(workdir), "--trials", "1",
               *option, cwd=tmp_path, env=clean_env())
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "use another --workdir" in lines[0] and option[0] in lines[0]
    assert "Traceback" not in done.stderr
    assert read_workdir(workdir) == before and not (tmp_path / "moved.db").exists()


@pytest.mark.parametrize("tag", ["team", "=nas", "condsearch.role=x"])
def test_a_malformed_or_reserved_tag_is_one_line_and_exit_2(tmp_path, tag):
    done = cli("search", str(write_space(tmp_path)), "--workdir", str(tmp_path / "run"),
               "--tag", tag, env=clean_env())
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and (repr(tag) in lines[0] or "condsearch itself" in lines[0])
    assert not (tmp_path / "run" / "condsearch.json").exists()


def test_tags_parse_as_mlflow_keys_and_values():
    assert parse_tags(["team=nas", "note=a=b", "empty="]) == {"team": "nas", "note": "a=b",
                                                              "empty": ""}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_tags(["no-equals"])


# ---- the Python API -----------------------------------------------------------------------------


def test_a_search_inside_an_active_run_nests_under_it_in_its_store_and_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'notebook.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = MlflowClient(uri).create_experiment("notebook",
                                                     (tmp_path / "art").resolve().as_uri())
    with mlflow.start_run(experiment_id=experiment) as outer:
        summary = search(str(write_space(tmp_path)), trials=1, workdir=tmp_path / "run",
                         progress=False, tags={"owner": "me"})
    assert summary.tracking_uri == uri and not (tmp_path / "run" / "mlflow.db").exists()
    client = MlflowClient(uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.experiment_id == experiment
    assert parent.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert parent.data.tags["owner"] == "me"
    trials = by_role(runs_in(uri), "trial")
    assert [t.data.tags["mlflow.parentRunId"] for t in trials] == [summary.parent_run_id]
    assert trials[0].data.tags["owner"] == "me"
    assert read_workdir(tmp_path / "run").experiment_id == experiment


def test_mlflow_experiment_id_of_an_existing_experiment_is_used(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    experiment = MlflowClient(uri).create_experiment("made earlier",
                                                     (tmp_path / "art").resolve().as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    summary = search(str(write_space(tmp_path)), trials=1, workdir=tmp_path / "run",
                     progress=False)
    runs = MlflowClient(uri).search_runs([experiment])
    assert {r.data.tags["condsearch.role"] for r in runs} >= {"search", "trial"}
    assert summary.parent_run_id in {r.info.run_id for r in runs}
    state = read_workdir(tmp_path / "run")
    assert (state.tracking_uri, state.experiment_id, state.experiment_name) == (
        uri, experiment, "made earlier")


def test_mlflow_run_id_as_mlflow_run_sets_it_is_the_run_a_search_nests_under(tmp_path,
                                                                             monkeypatch):
    uri = f"sqlite:///{tmp_path / 'project.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("project", (tmp_path / "art").resolve().as_uri())
    outer = client.create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_RUN_ID", outer)
    summary = search(str(write_space(tmp_path)), trials=1, workdir=tmp_path / "run",
                     progress=False)
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.experiment_id == experiment
    assert parent.data.tags["mlflow.parentRunId"] == outer


def test_a_flag_beats_the_environment_and_an_unknown_experiment_id_is_refused(tmp_path,
                                                                             monkeypatch):
    uri = f"sqlite:///{tmp_path / 'flags.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from the environment")
    space = str(write_space(tmp_path))
    summary = search(space, trials=1, workdir=tmp_path / "a", progress=False,
                     tracking_uri=uri, experiment="from a flag")
    assert summary.tracking_uri == uri and not (tmp_path / "env.db").exists()
    assert read_workdir(tmp_path / "a").experiment_name == "from a flag"
    with pytest.raises(SearchError, match="no MLflow experiment with id '999'"):
        search(space, trials=1, workdir=tmp_path / "b", progress=False, tracking_uri=uri,
               experiment_id="999")
    with pytest.raises(SearchError, match="not both"):
        search(space, trials=1, workdir=tmp_path / "c", progress=False, experiment="x",
               experiment_id="0")


# ---- records and URIs ---------------------------------------------------------------------------


def test_an_older_condsearch_json_without_the_experiment_name_still_reads(tmp_path):
    old = {"study_name": "s", "storage": "sqlite:///x/study.db",
           "tracking_uri": "sqlite:///x/mlflow.db", "experiment_id": "1", "space_name": "s",
           "objectives": [["accuracy", "maximize"]]}
    (tmp_path / "condsearch.json").write_text(json.dumps(old))
    state = read_workdir(tmp_path)
    assert state.experiment_id == "1" and state.experiment_name == ""


def test_relative_store_paths_become_absolute_and_servers_stay_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///rel/m.db") == f"sqlite:///{tmp_path.resolve()}/rel/m.db"
    assert absolute_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_uri("mlruns") == (tmp_path.resolve() / "mlruns").as_uri()
    assert absolute_uri("http://host:5000") == "http://host:5000"
    from condsearch.cli import ui_command
    from condsearch.orchestrate import WorkdirState

    server = WorkdirState("s", "sqlite:///s.db", "http://host:5000", "3", "s", [])
    assert ui_command(server, 5000) is None
