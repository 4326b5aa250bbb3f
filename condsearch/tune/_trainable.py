"""`trainable(space)`: a Ray Tune function trainable that runs condsearch's own trial function
(seed, build, fit, evaluate with per-sample FLOPs, knob sweep), reporting every epoch with a
checkpoint, so Tune's schedulers can stop it early and a retried or paused trial resumes."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from condsearch.orchestrate._trial import TrialResult, TrialSpec, eval_batch_size, run_trial
from condsearch.space._bounds import TrialLimits
from condsearch.track._target import TrackingTarget
from condsearch.train._interim import interim_metrics, subset_indices
from condsearch.tune._checkpoint import load_checkpoint, write_checkpoint
from condsearch.tune._keys import FLOPS_SUBSET
from condsearch.tune._reports import epoch_report, final_report, metric_keys


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a space shares, as plain data (it travels to the workers)."""

    task: Any
    sweep: dict[str, list[float]]
    seed: int
    objectives: list[tuple[str, str]]
    tracking: TrackingTarget | None = None
    code_paths: list[str] = field(default_factory=list)
    flops_samples: int = FLOPS_SUBSET
    limits: TrialLimits = field(default_factory=TrialLimits)
    #: data-parallel workers training each trial (`search.workers_per_trial`), and what each
    #: reserves; Ray Train restarts a trial's workers up to `max_retries` times
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_retries: int = 2

    def spec(self, config: dict[str, Any]) -> TrialSpec:
        """The trial the searcher suggested (`{"number": n, "arch": {...}}`)."""
        number = int(config["number"])
        return TrialSpec(number=number, arch=config["arch"], task=self.task, sweep=self.sweep,
                         seed=self.seed + number, tracking=self.tracking,
                         objectives=list(self.objectives), code_paths=list(self.code_paths),
                         limits=self.limits)


def trainable(space: Any, tracking: TrackingTarget | None = None, *, seed: int | None = None,
              sweep: bool = True, flops_samples: int = FLOPS_SUBSET,
              cpus_per_worker: float | None = None) -> Any:
    """A function trainable (`train(config)`) for `space`'s trials; pair it with `Searcher`.

    `config` is what the searcher suggested: `{"number": trial number, "arch": sampled arch}`.
    A trial is seeded with `seed` (default: the space's) + its number, as the local backend
    seeds it; `tracking` logs it as a child run of that MLflow parent run; `sweep=False` skips
    the inference-knob sweep; an epoch's FLOPs are measured on `flops_samples` validation
    samples (see `condsearch.tune.subset_indices`).

    With `search.workers_per_trial` W > 1 the trainable is a data-parallel trial's driver
    (`condsearch.tune._data_parallel`), already wrapped with its resources (no CPU, a little
    memory): each trial trains on W Ray Train workers of `cpus_per_worker` CPUs (default:
    `search.cpus_per_trial`, else 1) and `search.gpus_per_trial` GPUs each. Give it a
    `TuneConfig(max_concurrent_trials=...)` the cluster can place W workers for at once, and
    `reuse_actors=False` (Tune's default).
    """
    workers = int(space.execution.get("workers_per_trial", 1))
    limits = TrialLimits.of(space)
    cpus = float(cpus_per_worker or space.execution.get("cpus_per_trial") or 1.0)
    if workers > 1:
        limits = dataclasses.replace(limits, cpus=cpus)  # each rank computes on its own CPUs
    plan = TrialPlan(task=space.task, sweep=dict(space.sweep) if sweep else {},
                     seed=int(space.seed if seed is None else seed),
                     objectives=list(space.objectives), tracking=tracking,
                     code_paths=list(space.code_paths), flops_samples=int(flops_samples),
                     limits=limits, workers=workers, cpus_per_worker=cpus,
                     gpus_per_worker=float(space.execution.get("gpus_per_trial") or 0.0),
                     max_retries=int(space.execution.get("max_retries", 2)))
    if workers > 1:
        from condsearch.tune._data_parallel import data_parallel_trainable, missing_ray_train

        missing = missing_ray_train()
        if missing is not None:
            raise RuntimeError(f"search.workers_per_trial {workers}: {missing}")
        return data_parallel_trainable(plan)

    def condsearch_trial(config: dict[str, Any]) -> None:
        run_planned_trial(plan, config)

    return condsearch_trial


def run_planned_trial(plan: TrialPlan, config: dict[str, Any], session: Any = None
                      ) -> TrialResult:
    """Run one trial inside a Tune session: resume from its checkpoint if Tune hands one, report
    each epoch but the last with a checkpoint, then the final report with the whole result.

    `session` offers `report(metrics, checkpoint=None)` and `get_checkpoint()`: `ray.tune`
    itself by default; a test may pass its own."""
    from condsearch.train._fit import FitState

    if session is None:
        from ray import tune as session
    spec = plan.spec(config)
    close_abandoned_runs(spec)
    checkpoint = session.get_checkpoint()
    state = FitState(load_checkpoint(checkpoint) if checkpoint is not None else None)
    reporter = EpochReporter(plan, spec, state, session.report)
    result = run_trial(spec, on_epoch=reporter.epoch_done, fit_state=state,
                       on_run=reporter.run_started)
    session.report(reporter.final(result))
    return result


class EpochReporter:
    """Turns each epoch of a running fit into a report with a checkpoint (but the last epoch:
    the final report, after the full evaluation, stands for it).

    In a data-parallel trial (`dist`, a `condsearch.train._distributed.Dist`) every rank has
    one: every rank measures (the measurement is sharded) and reports, as Ray Train wants
    every rank to report equally often; rank 0's report carries the checkpoint."""

    def __init__(self, plan: TrialPlan, spec: TrialSpec, state: Any,
                 report: Callable[..., None], dist: Any = None,
                 checkpoint_class: Any = None) -> None:
        self.plan, self.spec, self.state, self._report = plan, spec, state, report
        #: the Checkpoint class `report` takes: ray.tune's (a Tune trial), ray.train's (a rank)
        self.dist, self._checkpoint_class = dist, checkpoint_class
        self.run_id: str | None = None
        self.epoch = state.resumed_epoch
        self.loss = float(state.saved["history"][-1]["train_loss"]) if state.saved else math.nan
        #: the validation set's size (the final report's FLOPs are measured on all of it)
        self.val_samples = 0

    def run_started(self, run_id: str | None) -> None:
        self.run_id = run_id

    def epoch_done(self, epoch: int, epochs: int, record: dict[str, float]) -> None:
        """Report the epoch, with the fit's state as a checkpoint, unless it was the last."""
        from ray.tune import Checkpoint

        Checkpoint = self._checkpoint_class or Checkpoint  # noqa: N806
        self.epoch, self.loss = epoch, float(record["train_loss"])
        self.val_samples = int(self.state.task.val[0].shape[0])
        if epoch >= epochs:
            return
        measured, samples = self.measure()
        report = epoch_report(epoch, record, measured, self.plan.objectives, self.run_id, samples)
        if self.dist is not None and self.dist.rank != 0:
            self._report(report, checkpoint=None)  # rank 0's state is the trial's checkpoint
            return
        with tempfile.TemporaryDirectory(prefix="condsearch-ckpt-") as folder:
            write_checkpoint(folder, self.state.save(), self.spec.number)
            self._report(report, checkpoint=Checkpoint.from_directory(folder))

    def measure(self) -> tuple[dict[str, float], int]:
        """The objective metrics on the fixed validation subset (`subset_indices`)."""
        model, x_val = self.state.model, self.state.task.val[0]
        idx = subset_indices(int(x_val.shape[0]), self.plan.flops_samples)
        x = x_val[idx].to(self.state.device)
        keys = metric_keys(self.plan.objectives)
        return (interim_metrics(model, x, keys, eval_batch_size(self.spec.arch), self.dist),
                len(idx))

    def final(self, result: TrialResult) -> dict[str, Any]:
        """The final report (the full validation set's values, or NaN for a failed trial)."""
        return final_report(result, self.epoch, self.loss, self.plan.objectives,
                            self.val_samples)


def close_abandoned_runs(spec: TrialSpec) -> None:
    """A retried (or resumed) trial's earlier attempt left its MLflow runs RUNNING: end them
    KILLED. One query per trial start, and only with tracking."""
    if spec.tracking is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient(spec.tracking.uri)
    runs = client.search_runs(
        [spec.tracking.experiment_id],
        f"tags.condsearch.trial = '{spec.number}' and attributes.status = 'RUNNING' "
        f"and tags.mlflow.parentRunId = '{spec.tracking.parent_run_id}'")
    for run in runs:
        client.set_terminated(run.info.run_id, "KILLED")
