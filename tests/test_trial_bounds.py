"""Bounds before cost: validation refuses a space its costliest candidate cannot afford, naming
the key that drives it; a trial checks its own candidate before building and training it; a
trial that runs past `search.trial_timeout` fails with that reason and the search goes on."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from helpers import load_study, mlflow_runs

from condsearch.orchestrate._deadline import TrialTimeout, deadline
from condsearch.space import parse_space
from condsearch.space._bounds import MAX_SWEEP_POINTS, MAX_TRAIN_STEPS

State = optuna.trial.TrialState

BASE = """\
name: bomb
task: {dataset: fashion_mnist}
model:
  backbone: token_transformer
  dim: DIM
  depth: DEPTH
  patch_size: 4
  mlp_ratio: RATIO
  components:
    moe: {enabled: MOE, experts: EXPERTS}
    early_exit: {enabled: MOE}
    token_selection: {enabled: MOE}
train: {epochs: EPOCHS}
SWEEP
"""
DEFAULTS = {"DIM": "32", "DEPTH": "2", "RATIO": "2.0", "MOE": "false", "EXPERTS": "4",
            "EPOCHS": "1", "SWEEP": ""}
SWEEP_300 = "sweep: {" + ", ".join(
    f"{knob}: [{', '.join(f'{0.5 + i / 1000:.3f}' for i in range(300))}]"
    for knob in ("moe.eval_capacity_factor", "early_exit.threshold",
                 "token_selection.keep_ratio")) + "}"
BOMBS = {
    "a dim of 20,000": ({"DIM": "20000"}, "bomb.yaml:5: model.dim: ", "model.dim drives it"),
    "an mlp_ratio of 1e6": ({"RATIO": "1.0e+6"}, "bomb.yaml:8: model.mlp_ratio: ",
                            "model.mlp_ratio drives it"),
    "a million experts": ({"MOE": "true", "EXPERTS": "1000000"},
                          "bomb.yaml:10: model.components.moe.experts: ",
                          "model.components.moe.experts drives it"),
    "100,000 layers": ({"DEPTH": "100000"}, "bomb.yaml:6: model.depth: ",
                       "model.depth drives it"),
    "a billion epochs": ({"EPOCHS": "1000000000"}, "bomb.yaml:13: train.epochs: ",
                         f"more than the limit of {MAX_TRAIN_STEPS:,}"),
    "three knobs of 300 values": ({"MOE": "true", "SWEEP": SWEEP_300},
                                  "bomb.yaml:14: sweep.moe.eval_capacity_factor: ",
                                  "27,000,000 knob settings"),
}


def bomb(**changes: str) -> str:
    text = BASE
    for key, value in {**DEFAULTS, **changes}.items():
        text = text.replace(key, value)
    return text


#: runs `condsearch ARGS` and prints its exit code and peak resident memory (KB): measured from a
#: small parent, as the peak of a child forked from this (large) test process counts its pages
MEASURE = ("import resource, subprocess, sys\n"
           "done = subprocess.run([sys.executable, '-m', 'condsearch', *sys.argv[1:]],\n"
           "                      stdout=subprocess.DEVNULL)\n"
           "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run_measured(*args: str) -> tuple[int, str, float]:
    """(exit code, stderr, peak resident MB) of `condsearch ARGS` in a child process."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True,
                          text=True, timeout=600)
    code, peak_kb = done.stdout.split()
    return int(code), done.stderr, int(peak_kb) / 1024


def validate_measured(path: Path) -> tuple[int, str, float]:
    """(exit code, stderr, peak resident MB) of `condsearch validate PATH` in a child process."""
    return run_measured("validate", str(path))


def test_a_plain_space_passes_the_bounds():
    parse_space(bomb(), "bomb.yaml")


@pytest.mark.parametrize("name", list(BOMBS))
def test_validate_refuses_each_resource_bomb_naming_the_key_that_drives_it(tmp_path, name):
    changes, where, why = BOMBS[name]
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(**changes))
    code, err, peak_mb = validate_measured(path)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"{tmp_path}/{where}"), line
    assert why in line
    assert peak_mb < 1024, f"validate peaked at {peak_mb:.0f} MB"


def test_the_memory_limit_names_its_source_and_can_be_raised():
    text = bomb(DIM="512", DEPTH="8").replace("train: {epochs: 1}",
                                             "train: {epochs: 1, batch_size: 4096}")
    with pytest.raises(Exception) as refused:
        parse_space(text + "search: {max_memory_gb: 4}\n", "bomb.yaml")
    (problem,) = refused.value.problems
    assert problem.key == "train.batch_size"
    assert "more than the 4.0 GB limit (search.max_memory_gb = 4)" in problem.message
    parse_space(text + "search: {max_memory_gb: 100}\n", "bomb.yaml")


def test_the_sweep_limit_counts_every_combination():
    few = "sweep: {early_exit.threshold: [0.5, 0.6], moe.eval_capacity_factor: [1.0, 2.0]}"
    parse_space(bomb(MOE="true", SWEEP=few), "bomb.yaml")
    assert MAX_SWEEP_POINTS < 300 ** 3


# ---- each trial checks its own candidate -------------------------------------------------------

BACKBONES = '''\
import time

from torch import nn


def wide(model, io):
    """A plain network whose width the space picks: a bomb when the width is huge."""
    width = model["width"]
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(),
                         nn.Linear(width, io["num_classes"]))


class Hangs(nn.Module):
    def __init__(self, io):
        super().__init__()
        self.out = nn.Linear(64, io["num_classes"])

    def forward(self, x):
        if self.training and len(x) > 8:  # training hangs; checks on a few samples do not
            while True:
                time.sleep(0.05)
        return self.out(x.flatten(1))


def sleepy(model, io):
    return Hangs(io) if model["hang"] else wide({"width": 16}, io)
'''


def user_space(tmp_path: Path, model: str, extra: str = "") -> Path:
    (tmp_path / "nets.py").write_text(BACKBONES)
    path = tmp_path / "space.yaml"
    path.write_text(f"name: bounded\ntask: {{dataset: digits, train_limit: 200}}\n"
                    f"model: {model}\ntrain: {{epochs: 1, batch_size: 32}}\n"
                    f"sampler: random\n{extra}")
    return path


def search_measured(space: Path, workdir: Path, *extra: str) -> float:
    """Run `condsearch search` to the end in a child; its peak resident memory in MB."""
    code, err, peak_mb = run_measured("search", str(space), "--workdir", str(workdir),
                                      "--quiet", *extra)
    assert code == 0, err[-3000:]
    return peak_mb


def states_and_errors(workdir: Path) -> list[tuple[State, str]]:
    study = load_study(workdir, "bounded")
    return [(t.state, t.user_attrs.get("condsearch.error", "")) for t in study.trials]


@pytest.mark.slow
def test_a_candidate_over_max_params_fails_before_training_and_the_search_goes_on(tmp_path):
    space = user_space(tmp_path, '{backbone: "nets:wide", width: {choice: [100000000, 16]}}',
                       "constraints: {max_params: 1000000}\nsearch: {trials: 4, seed: 1}\n")
    peak_mb = search_measured(space, tmp_path / "run")
    outcomes = states_and_errors(tmp_path / "run")
    failed = [e for s, e in outcomes if s == State.FAIL]
    assert failed and all(e.startswith("CandidateTooCostly: 7,500,000,010 parameters, more "
                                       "than constraints.max_params = 1,000,000") for e in failed)
    assert any(s == State.COMPLETE for s, _ in outcomes)
    runs = mlflow_runs(tmp_path / "run")
    refused = runs[runs["tags.condsearch.error"].fillna("").str.startswith("CandidateTooCostly")]
    assert len(refused) == len(failed)
    assert refused["metrics.train_loss"].isna().all() if "metrics.train_loss" in runs else True
    assert peak_mb < 2048, f"the search peaked at {peak_mb:.0f} MB"


@pytest.mark.slow
def test_a_candidate_over_the_memory_limit_fails_before_anything_is_allocated(tmp_path):
    space = user_space(tmp_path, '{backbone: "nets:wide", width: {choice: [100000000, 16]}}',
                       "search: {trials: 4, seed: 1, max_memory_gb: 2}\n")
    peak_mb = search_measured(space, tmp_path / "run")
    failed = [e for s, e in states_and_errors(tmp_path / "run") if s == State.FAIL]
    assert failed and all("parameters need about 120.0 GB to train, more than the 2.0 GB limit "
                          "(search.max_memory_gb = 2) (checked before building)" in e
                          for e in failed)
    assert peak_mb < 2048, f"the search peaked at {peak_mb:.0f} MB"


@pytest.mark.slow
def test_activations_are_measured_on_the_built_model_before_training(tmp_path):
    # 7 M parameters fit in 0.5 GB; a batch of 4096 samples' 400 KB activations does not
    space = user_space(tmp_path, '{backbone: "nets:wide", width: 100000}',
                       "search: {trials: 1, max_memory_gb: 0.5}\n").read_text()
    path = tmp_path / "space.yaml"
    path.write_text(space.replace("batch_size: 32", "batch_size: 4096"))
    search_measured(path, tmp_path / "run")
    ((state, error),) = states_and_errors(tmp_path / "run")
    assert state == State.FAIL
    assert "to train at batch 4096" in error and "checked before training" in error


@pytest.mark.slow
def test_a_trial_sleeping_forever_is_failed_at_trial_timeout_and_the_next_trial_runs(tmp_path):
    space = user_space(tmp_path, '{backbone: "nets:sleepy", hang: {choice: [true, false]}}',
                       "search: {trials: 4, seed: 1, trial_timeout: 2}\n")
    search_measured(space, tmp_path / "run")
    outcomes = states_and_errors(tmp_path / "run")
    timed_out = [i for i, (s, e) in enumerate(outcomes)
                 if s == State.FAIL and e == "TrialTimeout: ran past search.trial_timeout = 2 s"]
    assert timed_out and all(s == State.COMPLETE for i, (s, _) in enumerate(outcomes)
                             if i not in timed_out)
    assert max(i for i, (s, _) in enumerate(outcomes) if s == State.COMPLETE) > min(timed_out)


# ---- the deadline itself ----------------------------------------------------------------------


def test_a_deadline_breaks_a_blocking_sleep_in_the_main_thread():
    with pytest.raises(TrialTimeout), deadline(0.2):
        time.sleep(60)


def test_a_deadline_stops_python_work_in_another_thread_even_if_it_swallows_one():
    swallowed, caught = [], []

    def work() -> None:
        try:
            with deadline(0.2):
                try:
                    while True:
                        sum(range(1000))
                except TrialTimeout as exc:
                    swallowed.append(exc)  # the deadline raises again
                while True:
                    sum(range(1000))
        except TrialTimeout as exc:
            caught.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and len(swallowed) == len(caught) == 1


def test_work_done_before_the_deadline_is_never_interrupted_afterwards():
    with deadline(0.3):
        pass
    time.sleep(1.5)  # a stray alarm or watchdog would raise here
    done = []

    def work() -> None:
        with deadline(0.3):
            pass
        time.sleep(1.5)
        done.append(1)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert done == [1]


# ---- threads --------------------------------------------------------------------------------


def test_a_trial_computes_on_its_cpus_and_gives_the_threads_back(monkeypatch):
    import torch

    from condsearch.orchestrate._trial import TrialSpec, run_trial
    from condsearch.space._bounds import TrialLimits, usable_cpus

    seen = []
    arch = {"model": {"backbone": "token_transformer", "dim": 8, "depth": 1, "heads": 2,
                      "patch_size": 4, "components": {}}, "train": {"epochs": 1}}
    task = {"dataset": "digits", "train_limit": 100}
    for cpus in (2, None):
        spec = TrialSpec(number=0, arch=arch, task=task, sweep={}, seed=0,
                         limits=TrialLimits(cpus=cpus))
        result = run_trial(spec, on_epoch=lambda *_: seen.append(torch.get_num_threads()))
        assert result.ok, result.error
        assert torch.get_num_threads() == 1  # this test's own setting, given back
    assert seen == [2, usable_cpus()]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert usable_cpus() == 1 and TrialLimits().threads() == 1


def test_the_default_threads_leave_the_cores_other_work_keeps_busy(monkeypatch):
    from condsearch.space import _bounds

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_bounds, "usable_cpus", lambda: 4)
    for load, own, expected in ((0.2, 0, 4), (4.0, 0, 1), (9.0, 0, 1), (2.0, 0, 2),
                                (2.0, 2, 4), (3.0, 2, 3)):
        monkeypatch.setattr(_bounds.os, "getloadavg", lambda load=load: (load, load, load))
        assert _bounds.free_cpus(own) == expected, (load, own)
    assert _bounds.TrialLimits(cpus=3).threads(own=0) == 3
