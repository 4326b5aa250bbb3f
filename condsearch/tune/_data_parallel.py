"""Data-parallel trials (`search.workers_per_trial` > 1): each Ray Tune trial trains on a group of
Ray Train workers, one DDP rank each.

The Tune trial itself is a thin *driver* (a function trainable holding no CPU, only a little
memory, so a 2-CPU machine can place two workers): it builds a Ray Train V2 `TorchTrainer` for
its trial and waits in `fit()`. Every worker runs `worker_loop`: the trial's `run_trial` on its
rank (`condsearch.train._distributed.Dist`), reporting every epoch to Ray Train (every rank, as
Ray Train wants; rank 0's report carries the checkpoint of the fit state). Ray Train's
`TuneReportCallback` forwards rank 0's reports to the Tune trial, so Tune's scheduler (MO-ASHA,
ASHA) and the searcher see each epoch as they see a single-process trial's; the final report
carries the whole `TrialResult` as usual.

Failures: a worker that dies or raises (a failure the ranks did not meet together) makes Ray
Train restart the whole group, up to `search.max_retries` times, from the last epoch's
checkpoint (`ray.train.get_checkpoint()`: every rank loads its own copy). Failures the ranks
agree on (preflight, divergence, the deadline) are a failed result on every rank, not a retry.
When Ray Train gives up, the driver reports a failed final result naming why. The Train run
lives in the Tune trial's folder (`RunConfig(name="train", storage_path=<trial dir>)`), so a
Tune retry of a dead driver resumes the same run from its last checkpoint.

Stopping: when Tune stops a trial (a scheduler's STOP, Ctrl-C), the driver aborts its Train run
before its actor goes (`cleanup`), as Ray Train's own Ctrl-C handler does: the workers, their
placement group and Ray Train's helpers end with it. Killing the driver alone would leave the
workers' placement group reserved (its creator job, the search, lives on) and, on a cluster
without Ray's State API (no dashboard), a detached PlacementGroupCleaner per trial; the next
trials' workers could then not be placed. The controller's handle reaches the driver with the
run's first report (`_ControllerLink`); a trial stopped before any report is aborted by Ray
when the search ends.
"""

from __future__ import annotations

import math
from typing import Any

from condsearch.orchestrate._trial import TrialResult, run_trial
from condsearch.tune._checkpoint import load_checkpoint
from condsearch.tune._reports import final_report

#: the memory a trial's driver reserves (Ray's logical `memory` resource): Ray Tune needs a
#: non-empty request, and a CPU for a driver that only waits would leave the workers short
DRIVER_MEMORY_BYTES = 256 * 2**20
#: how often a trial's Ray Train controller may fail (a worker group that cannot be placed
#: within Ray Train's start-up timeout, 60 s by default) before the trial fails with why
CONTROLLER_FAILURES = 3
#: the name of a trial's Ray Train run, inside its Tune trial folder
RUN_NAME = "train"
#: seconds a stopped trial's driver waits for its Ray Train run to abort
ABORT_TIMEOUT_S = 60.0

#: in a driver's process (one trial a process: actors are not reused): its Train run's
#: controller, once linked, until the run ends; and whether Tune is stopping the trial
_live: dict[str, Any] = {}


def driver_resources() -> dict[str, float]:
    """What a data-parallel trial's driver reserves in Ray Tune: no CPU, a little memory."""
    return {"cpu": 0, "memory": DRIVER_MEMORY_BYTES}


def missing_ray_train() -> str | None:
    """Why this Ray cannot run data-parallel trials (Ray Train V2's TorchTrainer and Ray Tune's
    TuneReportCallback are needed), or None when it can."""
    try:
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback  # noqa: F401
    except ImportError as exc:
        return f"Ray Train is missing or too old ({exc}); pip install 'condsearch[ray]'"
    if not TorchTrainer.__module__.startswith("ray.train.v2."):
        return ("Ray Train V2 is switched off (RAY_TRAIN_V2_ENABLED=0): unset it, or set "
                "search.workers_per_trial to 1")
    return None


def data_parallel_trainable(plan: Any) -> Any:
    """The Tune trainable of a data-parallel trial (`plan.workers` workers): the driver
    function as a function trainable that aborts its Train run when Tune stops it, wrapped
    with `driver_resources()` (`tune.with_resources`)."""
    from ray import tune
    from ray.tune.trainable.function_trainable import wrap_function

    def condsearch_data_parallel_trial(config: dict[str, Any]) -> None:
        run_data_parallel_trial(plan, config)

    class DataParallelTrial(wrap_function(condsearch_data_parallel_trial)):  # type: ignore[misc]
        def condsearch_link_controller(self, controller: Any) -> None:
            """Called by the trial's Train controller (`_ControllerLink`): its handle."""
            link_controller(controller)

        def cleanup(self) -> None:
            try:
                end_train_run()
            finally:
                super().cleanup()

    return tune.with_resources(DataParallelTrial, driver_resources())


def link_controller(controller: Any) -> None:
    """In a trial's driver: keep its Train run's controller (the handle `_ControllerLink`
    sends), unless the run already ended. (A module function, so the class Ray pickles by
    value reaches this module's state, not a copy of it.)"""
    if not _live.get("ended"):
        _live["controller"] = controller


def end_train_run() -> None:
    """In a stopped trial's driver: abort its Train run, if it still runs."""
    from condsearch.orchestrate._ray_private import abort_train_run

    _live["stopping"] = True
    controller = _live.pop("controller", None)
    if controller is not None:
        abort_train_run(controller, ABORT_TIMEOUT_S)


def _controller_link(driver: Any) -> Any:
    """A Ray Train callback (it runs in the controller) handing `driver`, the trial's actor,
    the controller's handle with the run's first report."""
    from ray.train import UserCallback

    class _ControllerLink(UserCallback):
        def __init__(self) -> None:
            self.sent = False

        def after_report(self, run_context: Any, metrics: Any, checkpoint: Any) -> None:
            if not self.sent:
                import ray

                self.sent = True
                driver.condsearch_link_controller.remote(
                    ray.get_runtime_context().current_actor)

    return _ControllerLink()


def torch_trainer(plan: Any, config: dict[str, Any], storage_path: str,
                  callbacks: list[Any]) -> Any:
    """The Ray Train `TorchTrainer` of one trial: `plan.workers` workers of
    `plan.cpus_per_worker` CPUs (and a GPU each when `plan.gpus_per_worker`), gloo on the CPU
    (NCCL for CUDA tensors), `plan.max_retries` restarts, the last checkpoint kept."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    gpus = float(plan.gpus_per_worker)
    resources = {"CPU": float(plan.cpus_per_worker), **({"GPU": gpus} if gpus else {})}
    return TorchTrainer(
        worker_loop,
        train_loop_config={"plan": plan, "config": config},
        scaling_config=ray.train.ScalingConfig(num_workers=int(plan.workers), use_gpu=gpus > 0,
                                               resources_per_worker=resources),
        torch_config=TorchConfig(backend="cpu:gloo,cuda:nccl" if gpus else "gloo"),
        run_config=ray.train.RunConfig(
            name=RUN_NAME, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=int(plan.max_retries),
                                                   controller_failure_limit=CONTROLLER_FAILURES),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks),
    )


def run_data_parallel_trial(plan: Any, config: dict[str, Any]) -> None:
    """The driver of one data-parallel trial, in its Tune session: run the trial's Ray Train
    run, whose rank-0 reports reach Tune through `TuneReportCallback`; when Ray Train gives up,
    close the trial's abandoned MLflow runs and report a failed final result."""
    import ray
    import ray.train
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from condsearch.tune._trainable import close_abandoned_runs

    _live.clear()
    # the link first: the controller's handle is on its way before the first report
    callbacks = [_controller_link(ray.get_runtime_context().current_actor),
                 TuneReportCallback()]
    trainer = torch_trainer(plan, config, tune.get_context().get_trial_dir(), callbacks)
    try:
        trainer.fit()
    except Exception as exc:
        if _live.get("stopping"):
            return  # Tune stopped the trial and its driver aborted the run
        if not isinstance(exc, ray.train.TrainingFailedError):
            raise
        spec = plan.spec(config)
        close_abandoned_runs(spec)
        reason = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()),
                      str(exc).strip())
        result = TrialResult(number=spec.number, ok=False, world_size=int(plan.workers),
                             error=f"{type(exc).__name__}: Ray Train gave up on the trial's "
                                   f"workers: {reason}"[:5000])
        tune.report(final_report(result, 0, math.nan, plan.objectives, 0))
    finally:
        _live["ended"] = True
        _live.pop("controller", None)


def worker_loop(cfg: dict[str, Any]) -> None:
    """What every Ray Train worker of a trial runs: the trial on its rank, resumed from the
    group's last checkpoint (each rank loads its own copy), reporting every epoch and the
    final result. Rank 0 closes the MLflow runs an earlier attempt left running."""
    import ray.train
    import ray.train.torch

    from condsearch.train._distributed import Dist
    from condsearch.train._fit import FitState
    from condsearch.tune._trainable import EpochReporter, close_abandoned_runs

    plan, config = cfg["plan"], cfg["config"]
    dist = Dist.current(ray.train.torch.get_device())
    spec = plan.spec(config)
    if dist.rank == 0:
        close_abandoned_runs(spec)
    checkpoint = ray.train.get_checkpoint()
    state = FitState(load_checkpoint(checkpoint) if checkpoint is not None else None)
    reporter = EpochReporter(plan, spec, state, ray.train.report, dist=dist,
                             checkpoint_class=ray.train.Checkpoint)
    result = run_trial(spec, on_epoch=reporter.epoch_done, fit_state=state,
                       on_run=reporter.run_started, dist=dist)
    ray.train.report(reporter.final(result))

