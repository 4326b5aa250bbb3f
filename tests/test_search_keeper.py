"""The front a search keeps while it runs: updated point by point, as a full sort would find it,
with MLflow tags and the hypervolume curve written only where they change."""

import random

import pytest
from mlflow import MlflowClient

from condsearch.orchestrate import _keeper, hypervolume
from condsearch.orchestrate._keeper import FrontKeeper
from condsearch.orchestrate._points import Point, mark_front
from condsearch.track import PARETO_TAG, ParetoTagger
from condsearch.track._trial_runs import TrackingUnavailable

ACC_FLOPS = [("accuracy", "maximize"), ("flops", "minimize")]


def point(number: int, accuracy: float, flops: float, feasible: bool = True,
          run_id: str | None = None, **more: float) -> Point:
    values = {"accuracy": accuracy, "flops": flops, **more}
    return Point(number, number, False, values, dict(values), run_id=run_id, feasible=feasible)


def copies(points: list[Point]) -> list[Point]:
    return [Point(p.number, p.trial, p.derived, dict(p.values), feasible=p.feasible)
            for p in points]


@pytest.mark.parametrize("objectives", [
    ACC_FLOPS, [("accuracy", "maximize"), ("flops", "minimize"), ("params", "minimize")]])
def test_the_front_kept_point_by_point_is_the_front_of_all_points(objectives):
    rng = random.Random(0)
    names, directions = [n for n, _ in objectives], [d for _, d in objectives]
    keeper = FrontKeeper(objectives, {}, None)
    seen: list[Point] = []
    for number in range(300):
        # coarse values, so equal points and points equal in one objective turn up
        values = {"accuracy": rng.randint(0, 20) / 20, "flops": float(rng.randint(1, 30)),
                  "params": float(rng.randint(1, 5))}
        p = Point(number, number, False, {n: values[n] for n in names},
                  feasible=rng.random() > 0.1)
        batch = [p]
        if rng.random() < 0.2:  # a trial with a derived point
            batch.append(Point(number + 1000, number, True, {n: values[n] * 0.9 for n in names}))
        keeper.add(batch)
        seen += batch
        if number % 25 == 0 or number == 299:
            everything = copies(seen)
            front = mark_front(everything, objectives)
            assert [p.number for p in keeper.front] == [p.number for p in front]
            assert {p.number for p in seen if p.on_front} == {p.number for p in front}
            assert keeper.hypervolume == pytest.approx(hypervolume(
                [[p.values[n] for n in names] for p in front], directions, keeper.reference))


def test_loading_earlier_points_marks_their_front():
    points = [point(0, 0.5, 10.0), point(1, 0.6, 20.0), point(2, 0.4, 15.0), point(3, 0.9, 5.0,
                                                                                  feasible=False)]
    keeper = FrontKeeper(ACC_FLOPS, {}, None)
    keeper.load(points)
    assert [p.number for p in keeper.front] == [0, 1]
    assert [p.on_front for p in points] == [True, True, False, False]
    keeper.add([point(4, 0.7, 10.0)])  # dominates both
    assert [p.number for p in keeper.front] == [4]
    assert not points[0].on_front and not points[1].on_front


@pytest.fixture()
def tracked(tracking_target):
    """A parent run, a tagger over its experiment, and a way to add trial runs under it."""
    target = tracking_target
    client = MlflowClient(target.uri)

    def run() -> str:
        return client.create_run(target.experiment_id,
                                 tags={"mlflow.parentRunId": target.parent_run_id}).info.run_id

    return target, ParetoTagger(target.uri, target.experiment_id), client, run


def tags_of(client: MlflowClient, run_id: str) -> dict[str, str]:
    return client.get_run(run_id).data.tags


def test_a_trial_writes_tags_only_on_the_runs_whose_flag_changed(tracked, monkeypatch):
    target, tagger, client, new_run = tracked
    written: list[str] = []  # run ids of the tag writes (the real calls still go through)
    for method in ("log_batch", "set_tag"):
        real = getattr(MlflowClient, method)
        monkeypatch.setattr(MlflowClient, method, lambda self, run_id, *a, _real=real, **k: (
            written.append(run_id), _real(self, run_id, *a, **k))[1])
    keeper = FrontKeeper(ACC_FLOPS, {}, None, tagger, target)
    a, b = point(0, 0.5, 10.0, run_id=new_run()), point(1, 0.7, 20.0, run_id=new_run())
    keeper.add([a])
    keeper.add([b])
    assert written == [a.run_id, b.run_id]
    written.clear()
    dominated = point(2, 0.4, 30.0, run_id=new_run())
    keeper.add([dominated])
    assert written == [dominated.run_id]  # only the new run: the front did not change
    written.clear()
    best = point(3, 0.8, 5.0, run_id=new_run())
    infeasible = point(4, 0.9, 1.0, feasible=False, run_id=new_run())
    keeper.add([best, infeasible])
    assert sorted(written) == sorted([a.run_id, b.run_id, best.run_id, infeasible.run_id])
    for p, flag in [(a, "false"), (b, "false"), (dominated, "false"), (best, "true"),
                    (infeasible, "false")]:
        assert tags_of(client, p.run_id)[PARETO_TAG] == flag
    assert tags_of(client, infeasible.run_id)["condsearch.feasible"] == "false"


def test_a_tag_write_mlflow_refused_is_made_with_the_next_trial(tracked):
    target, tagger, client, new_run = tracked
    keeper = FrontKeeper(ACC_FLOPS, {}, None, tagger, target)
    first = point(0, 0.5, 10.0, run_id=new_run())
    client.delete_run(first.run_id)  # MLflow refuses writes to a deleted run
    with pytest.warns(TrackingUnavailable, match="MLflow update skipped"):
        keeper.add([first])
    client.restore_run(first.run_id)
    second = point(1, 0.4, 20.0, run_id=new_run())
    keeper.add([second])
    assert tags_of(client, first.run_id)[PARETO_TAG] == "true"
    assert tags_of(client, second.run_id)[PARETO_TAG] == "false"


def test_the_hypervolume_curve_reaches_the_parent_run_in_one_write_per_interval(tracked):
    target, tagger, client, new_run = tracked
    keeper = FrontKeeper(ACC_FLOPS, {}, [0.0, 100.0], tagger, target)
    volumes = []
    for number, (acc, flops) in enumerate([(0.5, 50.0), (0.4, 60.0), (0.6, 40.0), (0.9, 90.0)]):
        keeper.add([point(number, acc, flops, run_id=new_run())])
        volumes.append(keeper.hypervolume)
    assert client.get_metric_history(target.parent_run_id, "hypervolume") == []
    keeper.flush()
    history = client.get_metric_history(target.parent_run_id, "hypervolume")
    assert [(m.step, m.value) for m in history] == list(zip([1, 2, 3, 4], volumes))
    sizes = client.get_metric_history(target.parent_run_id, "front_size")
    assert [m.value for m in sizes] == [1, 1, 1, 2]


def test_once_the_interval_has_passed_a_trial_writes_the_curve_itself(tracked, monkeypatch):
    target, tagger, client, new_run = tracked
    monkeypatch.setattr(_keeper, "CURVE_FLUSH_S", 0.0)
    keeper = FrontKeeper(ACC_FLOPS, {}, [0.0, 100.0], tagger, target)
    keeper.add([point(0, 0.5, 50.0, run_id=new_run())])
    history = client.get_metric_history(target.parent_run_id, "hypervolume")
    assert [(m.step, m.value) for m in history] == [(1, 25.0)]
