"""Data-parallel trials (`search.workers_per_trial`, issue 17), the parts that need no Ray
cluster: the key's validation and the refusals where a trial trains in this process (the local
backend, `condsearch.Objective`), the Ray backend's capacity check and concurrency clamp on fake
node lists, and `run_trial` on two gloo ranks forked from this process (rank 0 logs, every rank
returns the same result, a failure only some ranks meet is agreed or re-raised).
"""

from __future__ import annotations

import pytest
from gloo_group import run_group
from helpers import PROBLEM_LINE, ROOT, cli, problems, trial_states

from condsearch.space import SpaceError, load_space, parse_space

SPACE = """\
name: dp
task: {dataset: digits, train_limit: 200}
model:
  backbone: token_transformer
  dim: 16
  depth: 1
  patch_size: 4
train: {epochs: 1, batch_size: 32}
search: SEARCH
"""


def space_text(search: str) -> str:
    return SPACE.replace("SEARCH", search)


# ---- the key -------------------------------------------------------------------------------------


def test_workers_per_trial_defaults_to_one_and_must_be_a_positive_integer():
    assert parse_space(space_text("{trials: 1}")).workers_per_trial == 1
    assert parse_space(space_text("{workers_per_trial: 2}")).workers_per_trial == 2
    assert problems(space_text("{workers_per_trial: 0}")) == [
        "space.yaml:9: search.workers_per_trial: must be >= 1, got 0"]
    assert problems(space_text("{workers_per_trial: 1.5}"))[0].startswith(
        "space.yaml:9: search.workers_per_trial: expected an integer")


@pytest.mark.parametrize("gpus", ["0.5", "2"])
def test_a_fraction_or_several_gpus_per_worker_are_refused_at_their_line(gpus):
    text = space_text(f"\n  workers_per_trial: 2\n  gpus_per_trial: {gpus}")
    (line,) = problems(text)
    assert line.startswith("space.yaml:11: search.gpus_per_trial: must be 0 or 1 with "
                           "search.workers_per_trial 2, got")
    # one worker may still share a GPU with other trials, or use two
    parse_space(space_text(f"{{gpus_per_trial: {gpus}}}"))
    parse_space(space_text("{workers_per_trial: 2, gpus_per_trial: 1}"))


def test_the_refusal_names_the_set_that_caused_it():
    text = space_text("{trials: 1}")
    (line,) = problems(text, ["search.workers_per_trial=4", "search.gpus_per_trial=0.25"])
    assert line.startswith("--set:2: search.gpus_per_trial: must be 0 or 1")


def test_space_problem_places_a_later_finding_at_the_keys_line_or_its_set(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(space_text("\n  trials: 1\n  workers_per_trial: 2"))
    space = load_space(path)
    assert str(space.problem(("search", "workers_per_trial"), "x")) == \
        f"{path}:11: search.workers_per_trial: x"
    moved = load_space(path, ["search.trials=2", "search.workers_per_trial=3"])
    assert str(moved.problem(("search", "workers_per_trial"), "x")) == \
        "--set:2: search.workers_per_trial: x"
    # a key the file does not write sits at its nearest ancestor's line
    assert str(space.problem(("search", "cpus_per_trial"), "x")).startswith(f"{path}:9: ")


# ---- where a trial trains in this process --------------------------------------------------------


def test_the_local_backend_refuses_several_workers_in_one_line_and_writes_nothing(tmp_path):
    import condsearch as cs

    path = tmp_path / "space.yaml"
    path.write_text(space_text("\n  trials: 1\n  workers_per_trial: 2"))
    workdir = tmp_path / "run"
    with pytest.raises(SpaceError) as info:
        cs.search(path, workdir=workdir, progress=False)
    message = str(info.value)
    assert message == (f"{path}:11: search.workers_per_trial: 2 workers per trial need the ray "
                       "backend (here a trial trains in this process); pass --backend ray "
                       "(backend='ray'), or set it to 1")
    assert not workdir.exists()

    done = cli("search", str(path), "--workdir", str(workdir), "--quiet",
               "--set", "search.workers_per_trial=3", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("--set:1: search.workers_per_trial: 3 workers "
                                                   "per trial need the ray backend"), done.stderr
    assert PROBLEM_LINE.match(lines[0].replace(str(path), "space.yaml"))
    assert not workdir.exists() and trial_states(workdir) == []


def test_validate_accepts_several_workers_and_notes_they_need_the_ray_backend(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(space_text("\n  trials: 1\n  workers_per_trial: 2"))
    done = cli("validate", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout
    assert ("note: search.workers_per_trial is 2: this space runs only with `condsearch search "
            "--backend ray`") in " ".join(done.stderr.split())
    plain = cli("validate", str(path), "--set", "search.workers_per_trial=1", cwd=tmp_path)
    assert plain.returncode == 0 and "workers_per_trial" not in plain.stderr


def test_objective_refuses_several_workers(tmp_path):
    import condsearch as cs

    path = tmp_path / "space.yaml"
    path.write_text(space_text("{workers_per_trial: 2}"))
    with pytest.raises(SpaceError, match=r"space.yaml:9: search.workers_per_trial: 2 workers per "
                       r"trial need the ray backend .*backend='ray'\), or set it to 1$"):
        cs.Objective(path)


def test_the_shipped_spaces_still_run_one_worker_per_trial():
    assert load_space(ROOT / "search_spaces" / "digits_moe.yaml").workers_per_trial == 1


# ---- the Ray backend's checks (fake node lists, no cluster) ---------------------------------------


def ray_space(search: str):
    pytest.importorskip("ray.train", reason="the ray backend needs pip install 'condsearch[ray]'")
    return parse_space(space_text(search), "space.yaml")


def test_the_cluster_check_counts_workers_per_node_and_refuses_at_the_keys_line():
    from condsearch.orchestrate._ray import check_cluster, worker_slots

    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 3.0, "GPU": 1.0}]
    assert worker_slots(nodes, 1.0, 0.0) == 5
    assert worker_slots(nodes, 2.0, 0.0) == 2  # a worker runs on one node: 1 + 1
    assert worker_slots(nodes, 1.0, 1.0) == 1
    space = ray_space("\n  workers_per_trial: 2\n  concurrency: 4")
    assert check_cluster(space, nodes, "10.0.0.5:6379") == 2  # trials of 2 workers at once
    space = ray_space("\n  workers_per_trial: 3\n  cpus_per_trial: 2")
    with pytest.raises(SpaceError) as info:
        check_cluster(space, nodes, "10.0.0.5:6379")
    assert str(info.value) == (
        "space.yaml:10: search.workers_per_trial: 3 workers of 2 CPU each cannot be placed at "
        "once: the Ray cluster at 10.0.0.5:6379 holds 5 CPUs in 2 nodes, room for 2 worker(s); "
        "lower workers_per_trial (or cpus_per_trial)")
    space = ray_space("{workers_per_trial: 2, gpus_per_trial: 1}")
    with pytest.raises(SpaceError, match=r"2 workers of 1 CPU and 1 GPU each cannot be placed at "
                       r"once: the local Ray instance holds 5 CPUs and 1 GPU in 2 nodes"):
        check_cluster(space, nodes, None)


def test_each_worker_reserves_its_share_of_the_cluster(monkeypatch):
    import ray

    from condsearch.orchestrate import _ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 8.0}},
                                               {"Alive": False, "Resources": {"CPU": 64.0}}])
    assert _ray.cpus_per_trial({"concurrency": 2}) == 4.0
    assert _ray.cpus_per_trial({"concurrency": 2}, workers=2) == 2.0
    assert _ray.cpus_per_trial({"concurrency": 8}, workers=2) == 1.0  # never below one
    assert _ray.cpus_per_trial({"concurrency": 1, "cpus_per_trial": 3.0}, workers=2) == 3.0


def test_data_parallel_trials_run_without_actor_reuse_and_refuse_a_users():
    pytest.importorskip("ray.tune", reason="the ray backend needs pip install 'condsearch[ray]'")
    from ray import tune

    from condsearch.orchestrate import SearchError
    from condsearch.orchestrate._ray import _tune_config

    execution = {"concurrency": 3, "workers_per_trial": 2}
    merged = _tune_config(object(), 4, execution, None, concurrency=1)
    assert merged.reuse_actors is False and merged.max_concurrent_trials == 1
    with pytest.raises(SearchError, match="tune_config may not set reuse_actors with "
                       "search.workers_per_trial 2"):
        _tune_config(object(), 4, execution, tune.TuneConfig(reuse_actors=True))
    single = _tune_config(object(), 4, {"concurrency": 3}, None)
    assert single.reuse_actors is True and single.max_concurrent_trials == 3


def test_the_trainable_of_a_data_parallel_space_is_a_driver_holding_no_cpu():
    space = ray_space("{workers_per_trial: 2, cpus_per_trial: 1, max_retries: 4}")
    import condsearch.tune as cst
    from condsearch.tune._data_parallel import DRIVER_MEMORY_BYTES

    driver = cst.trainable(space)
    request = driver.default_resource_request({}).required_resources
    assert request.get("CPU", 0) == 0 and request["memory"] == DRIVER_MEMORY_BYTES
    single = cst.trainable(parse_space(space_text("{trials: 1}")))
    assert callable(single) and not hasattr(single, "default_resource_request")


# ---- run_trial on two ranks (gloo, forked from this process, no Ray) ------------------------------

#: seconds a group may take before the test fails as hung
GROUP_TIMEOUT = 90.0
ARCH = {"model": {"backbone": "token_transformer", "dim": 16, "depth": 1, "heads": 2,
                  "patch_size": 4, "components": {"moe": {"enabled": True, "experts": 2,
                                                          "top_k": 1}}},
        "train": {"epochs": 2, "batch_size": 64, "eval_batch_size": 128}}
TASK = {"dataset": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2,
        "train_limit": 200}


def in_group(work, *args, world: int = 2) -> list:
    """`work(dist, *args)` on each rank of a gloo group of `world` forked processes; their
    results (or a rank's traceback, as {"error": ...}) by rank."""
    return run_group(work, *args, world=world, timeout=GROUP_TIMEOUT)


def values(results: list) -> list:
    for r, result in enumerate(results):
        if "error" in result:
            pytest.fail(f"rank {r} raised:\n{result['error']}")
    return [result["value"] for result in results]


def _trial(dist, tracking, limits_by_rank, fail_epoch_on, pause: float = 0.0):
    import time

    from condsearch.orchestrate._trial import TrialSpec, run_trial
    from condsearch.space._bounds import TrialLimits

    epochs = []

    def on_epoch(epoch, total, record):
        epochs.append((epoch, record))
        time.sleep(pause)
        if dist.rank in fail_epoch_on:
            raise RuntimeError(f"rank {dist.rank} broke at epoch {epoch}")

    spec = TrialSpec(number=3, arch=ARCH, task=TASK, sweep={"moe.eval_capacity_factor": [0.5]},
                     seed=7, tracking=tracking,
                     limits=limits_by_rank.get(dist.rank, TrialLimits(cpus=1)))
    result = run_trial(spec, on_epoch=on_epoch, dist=dist)
    return result, epochs


@pytest.mark.slow
def test_two_ranks_return_one_result_and_rank_0_alone_logs_it(tracking_target):
    from mlflow import MlflowClient

    from condsearch.orchestrate._trial import TAG_DEVICES, TAG_WORLD_SIZE

    (r0, epochs0), (r1, epochs1) = values(in_group(_trial, tracking_target, {}, ()))
    assert r0.ok, r0.error
    assert r0 == r1  # the same metrics, knobs, derived points, run ids on every rank
    assert r0.world_size == 2 and len(r0.devices) == 2 and r0.devices[0].startswith("cpu@")
    assert [e for e, _ in epochs0] == [e for e, _ in epochs1] == [1, 2]
    assert epochs0 == epochs1  # every rank's epoch callback sees the same record
    assert [d.knobs for d in r0.derived] == [{"moe.eval_capacity_factor": 0.5}]

    client = MlflowClient(tracking_target.uri)
    runs = client.search_runs([tracking_target.experiment_id],
                              "tags.`condsearch.role` = 'trial'")
    (run,) = runs  # one run for the trial, not one per rank
    assert run.info.run_id == r0.run_id and run.info.status == "FINISHED"
    assert run.data.tags[TAG_WORLD_SIZE] == "2"
    assert run.data.tags[TAG_DEVICES] == ",".join(r0.devices)
    assert run.data.metrics["accuracy"] == r0.metrics["accuracy"]
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2]
    derived = client.search_runs([tracking_target.experiment_id],
                                 "tags.`condsearch.role` = 'derived'")
    assert [d.info.run_id for d in derived] == [r0.derived[0].run_id]
    names = {a.path for a in client.list_artifacts(r0.run_id)}
    assert {"weights.safetensors", "architecture.yaml"} <= names


@pytest.mark.slow
def test_a_preflight_failure_on_one_rank_fails_the_trial_on_every_rank_with_its_reason():
    from condsearch.space._bounds import TrialLimits

    # rank 1 alone allows too few parameters: both ranks fail, with rank 1's reason, at once
    (r0, epochs0), (r1, epochs1) = values(in_group(_trial, None, {1: TrialLimits(max_params=10)},
                                                   ()))
    assert not r0.ok and r0 == r1
    assert r0.error.startswith("CandidateTooCostly: ") and "max_params = 10" in r0.error
    assert epochs0 == epochs1 == []


@pytest.mark.slow
def test_a_failure_the_ranks_did_not_agree_on_is_raised_and_the_run_ends_killed(
        tracking_target):
    from mlflow import MlflowClient

    results = in_group(_trial, tracking_target, {}, (0, 1))
    for r, result in enumerate(results):
        assert "error" in result and f"RuntimeError: rank {r} broke at epoch 1" in \
            result["error"], result
    client = MlflowClient(tracking_target.uri)
    (run,) = client.search_runs([tracking_target.experiment_id],
                                "tags.`condsearch.role` = 'trial'")
    assert run.info.status == "KILLED"
    assert run.data.tags["condsearch.error"] == "RuntimeError: rank 0 broke at epoch 1"


@pytest.mark.slow
def test_ranks_stop_together_at_the_deadline_and_fail_as_a_timeout():
    from condsearch.space._bounds import TrialLimits

    # each epoch's callback outlasts the timeout: the ranks agree at the next step
    limits = TrialLimits(cpus=1, timeout=0.5)
    (r0, epochs0), (r1, _) = values(in_group(_trial, None, {0: limits, 1: limits}, (), 1.0))
    assert not r0.ok and r0 == r1, (r0, r1)
    assert r0.error == "TrialTimeout: ran past search.trial_timeout = 0.5 s"
    assert len(epochs0) <= 1
