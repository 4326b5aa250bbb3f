"""The live hypervolume: its reference bounds every trial, so a better front always adds volume;
and the knee of a front too small to bend."""

from pathlib import Path

import pytest
from helpers import load_study, mlflow_runs

from condsearch._names import ATTR_HYPERVOLUME_REFERENCE, ATTR_METRICS
from condsearch.orchestrate import knee_index, search
from condsearch.orchestrate._keeper import (
    FrontKeeper,
    costliest_flops,
    reference_bounds,
    reference_point,
)
from condsearch.orchestrate._points import Point
from condsearch.space import load_space

ACC_FLOPS = [("accuracy", "maximize"), ("flops", "minimize")]
MAX_MIN = ["maximize", "minimize"]

SPACE = """\
name: live_hv
task: {dataset: digits, train_limit: 200}
model:
  backbone: token_transformer
  dim: {choice: [8, 16]}
  depth: {int: [1, 2]}
  heads: 2
  patch_size: 4
  components:
    early_exit:
      enabled: {choice: [true, false]}
      threshold: {float: [0.5, 0.95]}
objectives: [accuracy, flops]
CONSTRAINTS
train: {epochs: 1, batch_size: 64, lr: 5.0e-3, eval_batch_size: 128}
sampler: random
sweep: {early_exit.threshold: [0.6, 0.9]}
search: {trials: 3, seed: 5}
"""


def point(number: int, accuracy: float, flops: float) -> Point:
    return Point(number=number, trial=number, derived=False,
                 values={"accuracy": accuracy, "flops": flops})


def write_space(tmp_path: Path, constraints: str = "") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("CONSTRAINTS", constraints))
    return path


def test_the_hypervolume_rises_when_a_point_past_twice_the_first_cost_improves_the_front():
    cheap, costly = point(0, 0.37, 1.0e4), point(1, 0.62, 5.0e4)  # 5x the first trial's FLOPs
    keeper = FrontKeeper(ACC_FLOPS, {}, None, bounds={"accuracy": 0.0, "flops": 1.0e6})
    keeper.add([cheap])
    first = keeper.hypervolume
    keeper.add([costly])
    assert keeper.reference == [0.0, 1.0e6]
    assert len(keeper.front) == 2
    assert keeper.hypervolume > first > 0
    # The old reference (2 x the first trial's FLOPs) left this improvement unseen.
    old = FrontKeeper(ACC_FLOPS, {}, None)
    old.add([point(0, 0.37, 1.0e4)])
    before = old.hypervolume
    old.add([point(1, 0.62, 5.0e4)])
    assert old.reference == [0.0, 2.0e4] and old.hypervolume == before


def test_every_improvement_of_the_front_raises_the_hypervolume():
    keeper = FrontKeeper(ACC_FLOPS, {}, None, bounds={"accuracy": 0.0, "flops": 1.0e9})
    volumes = []
    for i, (acc, flops) in enumerate([(0.2, 1e3), (0.3, 5e3), (0.25, 9e3), (0.5, 4e5),
                                      (0.6, 3e7), (0.55, 2e3)]):
        size = [p.number for p in keeper.front]
        keeper.add([point(i, acc, flops)])
        volumes.append(keeper.hypervolume)
        if [p.number for p in keeper.front] != size:
            assert len(volumes) == 1 or volumes[-1] > volumes[-2]
        else:
            assert volumes[-1] == volumes[-2]  # dominated (0.25 @ 9e3): nothing changes


def test_the_reference_comes_from_bounds_constraints_else_the_first_points():
    assert reference_point([], ACC_FLOPS, {}, {"flops": 7.0}) == [0.0, 7.0]
    assert reference_point([], ACC_FLOPS, {"max_flops": 9.0}) == [0.0, 9.0]
    assert reference_point([], ACC_FLOPS, {}) is None
    assert reference_point([point(0, 0.5, 3.0)], ACC_FLOPS, {}) == [0.0, 6.0]
    params = [("accuracy", "maximize"), ("params", "minimize")]
    assert reference_point([Point(0, 0, False, {"accuracy": 0.5, "params": 10.0})], params,
                           {}, {"accuracy": 0.0}) == [0.0, 20.0]


def test_a_resumed_keeper_keeps_the_reference_it_was_given():
    keeper = FrontKeeper(ACC_FLOPS, {}, [0.0, 123.0], bounds={"flops": 5.0})
    keeper.load([point(0, 0.5, 10.0)])
    assert keeper.reference == [0.0, 123.0]
    assert keeper.sources["flops"] == "recorded by an earlier invocation"


def test_max_flops_bounds_the_reference_without_building_anything(tmp_path):
    space = load_space(write_space(tmp_path, "constraints: {max_flops: 12345}"))
    assert reference_bounds(space) == ({"accuracy": 0.0, "flops": 12345.0},
                                       {"accuracy": "worst accuracy",
                                        "flops": "constraints.max_flops"})


def test_an_unbuildable_space_falls_back_to_twice_the_first_trial():
    class Broken:
        objectives = ACC_FLOPS
        constraints: dict = {}

        def distributions(self):
            raise RuntimeError("no")

    bounds, sources = reference_bounds(Broken())
    assert "flops" not in bounds and costliest_flops(Broken()) is None
    keeper = FrontKeeper(ACC_FLOPS, {}, None, bounds=bounds, sources=sources)
    keeper.add([point(0, 0.5, 4.0)])
    assert keeper.reference == [0.0, 8.0]
    assert keeper.sources["flops"] == "2 x the first trial's value"


def test_a_tiny_search_records_the_costliest_candidates_flops_and_no_trial_exceeds_them(tmp_path):
    path = write_space(tmp_path)
    expected = costliest_flops(load_space(path))
    assert expected is not None and expected > 0
    search(str(path), trials=3, workdir=tmp_path / "run", progress=False)
    study = load_study(tmp_path / "run", "live_hv")
    reference = study.user_attrs[ATTR_HYPERVOLUME_REFERENCE]
    assert reference == [0.0, pytest.approx(expected)]
    complete = [t for t in study.trials if t.values is not None]
    assert len(complete) >= 3
    for t in complete:
        assert t.user_attrs[ATTR_METRICS]["flops"] <= reference[1]
    runs = mlflow_runs(tmp_path / "run")
    parent = runs[runs["tags.condsearch.role"] == "search"].iloc[0]
    assert float(parent["tags.hypervolume.reference.flops"]) == pytest.approx(expected)
    assert parent["tags.hypervolume.reference.flops.source"] == "costliest candidate"


def test_the_knee_of_one_point_is_that_point():
    assert knee_index([[0.7, 3.0]], MAX_MIN) == 0


def test_the_knee_of_two_points_is_the_better_normalised_trade_off():
    # 0.62 for 5x the FLOPs of 0.37: the cheap point is the better trade-off, in either order.
    assert knee_index([[0.37, 1.0e6], [0.62, 5.0e6]], MAX_MIN) == 0
    assert knee_index([[0.62, 5.0e6], [0.37, 1.0e6]], MAX_MIN) == 1
    # 0.62 for 1.2x the FLOPs: the accurate point.
    assert knee_index([[0.37, 1.0e6], [0.62, 1.2e6]], MAX_MIN) == 1
    assert knee_index([[0.62, 1.2e6], [0.37, 1.0e6]], MAX_MIN) == 0


def test_a_tie_between_two_points_goes_to_the_more_accurate_one():
    # Each falls short by half: accuracy 0.5 of 1.0, FLOPs 2 of 1 (1 of 2 larger).
    assert knee_index([[0.5, 1.0], [1.0, 2.0]], MAX_MIN) == 1
    assert knee_index([[1.0, 2.0], [0.5, 1.0]], MAX_MIN) == 0
    assert knee_index([[0.5, 1.0], [0.5, 1.0]], MAX_MIN) == 0  # identical: the first
