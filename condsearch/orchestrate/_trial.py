"""One trial: build, train and measure a candidate, sweep its inference knobs, log it all.

It depends only on what its TrialSpec holds, so the local and the Ray backend call it alike.

With a `dist` of two or more ranks (`search.workers_per_trial`, on Ray) every rank calls
`run_trial` with the same spec: each trains its share of every batch and evaluates its share of
the evaluation batches (`condsearch.train._distributed`), and every rank returns the same
result. Rank 0 alone logs to MLflow (the trial's run, its artifacts, the derived runs) and times
the latency. The ranks agree on the failures they can meet at different places (preflight,
building, the deadline), so a failed trial fails on every rank with the same reason; a failure
only some ranks meet elsewhere is raised, for the caller (Ray Train) to restart the group.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from condsearch._names import OBJECTIVE_METRICS, TAG_STOP_REASON, TAG_STOPPED_EARLY
from condsearch.orchestrate._deadline import TrialTimeout, deadline
from condsearch.space._bounds import TrialLimits
from condsearch.track._target import TrackingTarget
from condsearch.track._trial_runs import TrialRun

if TYPE_CHECKING:
    from condsearch.data import Task

#: MLflow tags of a data-parallel trial's run: how many ranks trained it, and where
TAG_WORLD_SIZE = "condsearch.world_size"
TAG_DEVICES = "condsearch.devices"
#: a data-parallel trial's ranks stop at the step they agree passed `search.trial_timeout`; a
#: watchdog raises on each rank this much later still (a share of the timeout, at least
#: BACKSTOP_MIN_S), for work that reaches no agreement point in time
BACKSTOP_SHARE = 0.1
BACKSTOP_MIN_S = 5.0


class AgreedFailure(RuntimeError):
    """A failure every rank of a data-parallel trial raises together: the first failing rank's
    reason (`str()`), so every rank returns the same failed result."""


@dataclass
class TrialSpec:
    """Everything a trial needs, as plain data (it travels to remote workers).

    `task` is a task spec, or, for a trial run in this process (`run_trial` called directly), a
    `condsearch.data.Task` held in memory; only the Ray backend needs a spec it can serialise.
    """

    number: int
    arch: dict[str, Any]
    task: dict[str, Any] | Task
    sweep: dict[str, list[float]]
    seed: int
    tracking: TrackingTarget | None = None
    objectives: list[tuple[str, str]] = field(
        default_factory=lambda: [("accuracy", "maximize"), ("flops", "minimize")]
    )
    #: folders searched for a backbone named by import path (the space file's folder), so a
    #: worker process imports the same code as the driver
    code_paths: list[str] = field(default_factory=list)
    #: what the trial may cost (constraints, memory, time), checked before and while it trains
    limits: TrialLimits = field(default_factory=TrialLimits)


@dataclass
class DerivedPoint:
    """An (accuracy, FLOPs, ...) point from the trained weights with other inference knobs."""

    knobs: dict[str, float]
    metrics: dict[str, float]
    run_id: str | None = None

    def values(self, objectives: list[tuple[str, str]]) -> list[float]:
        return [self.metrics[OBJECTIVE_METRICS[name]] for name, _ in objectives]


@dataclass
class TrialResult:
    """What a trial measured, or why it failed."""

    number: int
    ok: bool
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    knobs: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    derived: list[DerivedPoint] = field(default_factory=list)
    device: str = "cpu"
    #: how many data-parallel ranks trained the trial, and their `device@host` (rank order;
    #: empty for a trial run in one process)
    world_size: int = 1
    devices: list[str] = field(default_factory=list)
    #: a trial a multi-fidelity scheduler stopped early: the last epoch it trained, and why
    #: (`metrics` then holds what it measured at that rung)
    stopped_at: int | None = None
    stop_reason: str | None = None

    def values(self, objectives: list[tuple[str, str]]) -> list[float] | None:
        """Objective values in study order, or None when the trial has no usable result."""
        if not self.ok:
            return None
        values = [self.metrics.get(OBJECTIVE_METRICS[name], math.nan) for name, _ in objectives]
        return values if all(math.isfinite(v) for v in values) else None


class TrialStopped(Exception):
    """Raised from an epoch callback to end the trial early: a scheduler judged it at a rung
    and stopped it. `run_trial` returns it as a stopped result, neither failed nor finished."""

    def __init__(self, epoch: int, reason: str, metrics: dict[str, float]) -> None:
        super().__init__(f"stopped after epoch {epoch}: {reason}")
        self.epoch, self.reason, self.metrics = epoch, reason, dict(metrics)


def _measure(model, task, evaluation, batch_size, dist: Any = None) -> dict[str, float]:
    """A trial's metrics from its evaluation, the parameter count and the batch-1 latency
    (with `dist`: timed on rank 0 alone while the others wait, then sent to them)."""
    from condsearch.cost import batch1_latency_ms, count_params

    x_val = task.val[0].to(next(model.parameters()).device)
    metrics = evaluation.summary()
    metrics["params"] = float(count_params(model))
    if dist is None or not dist.parallel:
        metrics["latency_ms"] = batch1_latency_ms(model, x_val)
    else:
        dist.barrier()
        metrics["latency_ms"] = dist.from_rank0(
            batch1_latency_ms(model, x_val) if dist.rank == 0 else None)
    metrics.update(evaluation.stats)
    return metrics


def _everyone(dist: Any, value: Any) -> list[Any]:
    """`value` of every rank, in rank order (`[value]` for a single process)."""
    if not dist.parallel:
        return [value]
    import torch.distributed as torch_dist

    out: list[Any] = [None] * dist.world
    torch_dist.all_gather_object(out, value, group=dist.group)
    return out


def _describe(exc: BaseException, spec: TrialSpec) -> str:
    """A failure as the trial records it."""
    from condsearch.train._distributed import TrainingTimedOut

    if isinstance(exc, (TrialTimeout, TrainingTimedOut)):
        return f"TrialTimeout: ran past search.trial_timeout = {spec.limits.timeout:g} s"
    if isinstance(exc, AgreedFailure):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _agree_on(dist: Any, failure: BaseException | None, spec: TrialSpec) -> None:
    """With two or more ranks: when any rank met a failure (`failure` on that rank, None on
    the others), raise `AgreedFailure` with the first failing rank's reason on every rank."""
    if not dist.parallel:
        if failure is not None:
            raise failure
        return
    reasons = _everyone(dist, None if failure is None else _describe(failure, spec))
    first = next((r for r in reasons if r is not None), None)
    if first is not None:
        raise AgreedFailure(first) from failure


def _check_deadline(dist: Any, spec: TrialSpec) -> None:
    """With two or more ranks, between the phases of a trial: every rank fails the trial
    together once the deadline passed on any rank's clock. (A single process is interrupted by
    `deadline` itself.)"""
    if dist.parallel and dist.deadline is not None:
        (late,) = dist.agree(dist.past_deadline())
        if late:
            raise AgreedFailure(_describe(TrialTimeout(), spec))


def _agreed(exc: BaseException) -> bool:
    """Whether every rank of a data-parallel trial raised `exc` at the same point."""
    from condsearch.train import TrainingDiverged
    from condsearch.train._distributed import TrainingTimedOut

    return isinstance(exc, (AgreedFailure, TrainingDiverged, TrainingTimedOut))


def _train_settings(spec: TrialSpec) -> dict[str, Any]:
    """The arch's train section with every declared default filled in."""
    from condsearch.space import TRAIN_PARAMS, complete

    return complete(TRAIN_PARAMS, spec.arch.get("train"))


def eval_batch_size(arch: dict[str, Any]) -> int:
    """The batch size an arch's trial evaluates and counts FLOPs with."""
    from condsearch.space import TRAIN_PARAMS, complete

    return int(complete(TRAIN_PARAMS, arch.get("train"))["eval_batch_size"])


def _save_weights_and_arch(run: TrialRun, model, spec: TrialSpec, task, knobs) -> None:
    from safetensors.torch import save_file

    from condsearch.models import backbone_of

    with tempfile.TemporaryDirectory() as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(Path(tmp) / "weights.safetensors"))
        arch = {**spec.arch, "inference": knobs, "task": _task_record(spec.task),
                "io": task.info()}
        decl = backbone_of(spec.arch)
        if decl.origin != "builtin" and decl.factory_path:
            # where the model's code lives, for a machine that knows the backbone by no name
            arch["factory"] = decl.factory_path
        (Path(tmp) / "architecture.yaml").write_text(yaml.safe_dump(arch, sort_keys=False))
        run.log_artifacts(tmp)


def _task_record(task: dict[str, Any] | Task) -> dict[str, Any]:
    """The task as architecture.yaml records it: the spec, or for a Task held in memory (which
    YAML cannot write) its name under the dataset `<in-memory>`; the arch's `io` describes it."""
    from condsearch.data._task import IN_MEMORY, Task

    return {"dataset": IN_MEMORY, "name": str(task.name)} if isinstance(task, Task) else task


def _device_name(spec: TrialSpec) -> str | None:
    """The device the trial will train on, or None where that fails (the trial then meets the
    error itself, and records it)."""
    try:
        from condsearch.train import select_device

        return str(select_device(_train_settings(spec)["device"]))
    except Exception:
        return None


#: the threads the last trial of this process computed on: its own share of the load average
_last_threads = [0]


def _use_threads(count: int) -> int:
    """Compute on `count` intra-op threads from now on; the count used before. More threads
    than the trial's CPUs oversubscribe a shared machine: each op then waits for its slowest
    thread, and the spinning threads burn CPU time (README, "Speed on a shared machine")."""
    import torch

    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    return before


def run_trial(spec: TrialSpec, on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
              on_model: Callable[[Any], None] | None = None, *, fit_state: Any = None,
              on_run: Callable[[str | None], None] | None = None,
              dist: Any = None) -> TrialResult:
    """Train and measure one candidate; a failure is returned (ok=False), never raised.

    `on_epoch(epoch, epochs, record)` follows training, and may end it early by raising
    `TrialStopped` (a stopped result: `stopped_at`, `stop_reason`, the rung's metrics, its run
    ended KILLED with the tags saying why); `on_model(model)` receives the trained
    model (knobs as trained) once the trial succeeded, for a caller that keeps it.
    `fit_state` (a `condsearch.train._fit.FitState`) is handed to `fit`: it exposes the live fit
    to `on_epoch` and, holding a saved fit, resumes it; `on_run(run_id)` gets the MLflow run id
    (None without tracking) before training starts.

    `dist` (a `condsearch.train._distributed.Dist`; default: this process alone) makes this call
    one rank of a data-parallel trial that every rank of the group calls with the same spec,
    computing on `dist.device` (see the module's docstring). A failure the ranks did not meet
    together (a worker's own error while training or measuring) is then raised, not returned,
    after ending rank 0's run KILLED: the group restarts from the last checkpoint."""
    from condsearch.train._distributed import SINGLE

    dist = SINGLE if dist is None else dist
    for folder in spec.code_paths:
        if folder not in sys.path:
            sys.path.append(folder)
    tags = {"condsearch.trial": str(spec.number), "condsearch.role": "trial"}
    device_name = str(dist.device) if dist.parallel else _device_name(spec)
    if device_name is not None:  # written with the run itself, not by a later tag write
        tags["condsearch.device"] = device_name
    devices: list[str] = []
    timeout = spec.limits.timeout
    if dist.parallel:
        devices = _everyone(dist, f"{dist.device}@{socket.gethostname()}")
        tags.update({TAG_WORLD_SIZE: str(dist.world), TAG_DEVICES: ",".join(devices)})
        if timeout is not None:  # rank 0's start + the timeout: one deadline for every rank
            dist = dataclasses.replace(dist, deadline=dist.from_rank0(time.time() + timeout))
            timeout = (dist.deadline - time.time()) + max(BACKSTOP_MIN_S,
                                                           BACKSTOP_SHARE * timeout)
    lead = dist.rank == 0  # the rank that logs
    run = TrialRun(spec.tracking if lead else None, f"trial-{spec.number}", tags)
    result = TrialResult(number=spec.number, ok=False,
                         run_id=dist.from_rank0(run.run_id) if dist.parallel else run.run_id,
                         world_size=dist.world, devices=devices)
    if on_run is not None:
        on_run(result.run_id)
    model = None
    count = spec.limits.threads(own=_last_threads[0])
    threads = _use_threads(count)
    _last_threads[0] = count
    try:
        from condsearch.blocks import inference_knobs
        from condsearch.data import load_task
        from condsearch.models import build_model
        from condsearch.train import evaluate, fit, seed_everything, select_device, sweep_knobs
        from condsearch.train._preflight import check_before_build, check_built

        run.log_params(spec.arch)
        with deadline(timeout):
            failure = None
            try:
                task = load_task(spec.task, near=next(iter(spec.code_paths), None))
                train_cfg = _train_settings(spec)
                # Raises what _device_name swallowed; otherwise the device the run's tag names.
                device = dist.device if dist.parallel else select_device(train_cfg["device"])
                result.device = str(device)
                # An impossible candidate fails here, in milliseconds, with its reason; a
                # data-parallel rank trains on its share of each batch.
                batch_size = -(-int(train_cfg["batch_size"]) // dist.world)
                params = check_before_build(spec.arch, task.info(), batch_size, spec.limits,
                                            device)
                # Seeded before the model is built, so its initial weights repeat too.
                seed_everything(spec.seed)
                model = build_model(spec.arch, task)
                check_built(model, task.train[0], params, batch_size, spec.limits, device)
            except Exception as exc:
                if not dist.parallel:
                    raise
                failure = exc  # the ranks' nodes may differ: they agree before training
            _agree_on(dist, failure, spec)

            def epoch_done(epoch: int, epochs: int, record: dict[str, float]) -> None:
                run.log_metrics(record, step=epoch)
                if on_epoch is not None:
                    on_epoch(epoch, epochs, record)

            fit(model, task, train_cfg, device=device, seed=spec.seed, on_epoch=epoch_done,
                state=fit_state, dist=dist)
            _check_deadline(dist, spec)
            batch = int(train_cfg["eval_batch_size"])
            result.knobs = inference_knobs(model)
            result.metrics = _measure(model, task, evaluate(model, task, "val", batch, dist=dist),
                                      batch, dist)
            if any(not math.isfinite(v) for v in result.metrics.values()):
                # the same metrics on every rank: the same failure everywhere
                raise AgreedFailure(f"ValueError: non-finite metrics: {result.metrics}") \
                    if dist.parallel else ValueError(f"non-finite metrics: {result.metrics}")
            run.log_metrics(result.metrics)
            if lead:
                _save_weights_and_arch(run, model, spec, task, result.knobs)
            _check_deadline(dist, spec)
            for knobs, evaluation in sweep_knobs(model, task, spec.sweep, "val", batch,
                                                 dist=dist):
                from condsearch.blocks import set_inference_knobs

                set_inference_knobs(model, knobs)
                metrics = _measure(model, task, evaluation, batch, dist)
                set_inference_knobs(model, result.knobs)
                derived = TrialRun(spec.tracking if lead else None,
                                   f"trial-{spec.number}-" + ",".join(
                                       f"{k.split('.')[-1]}={v:g}" for k, v in knobs.items()),
                                   {"condsearch.role": "derived",
                                    "condsearch.derived_from": str(spec.number)},
                                   parent_run_id=run.run_id)
                derived.log_params(knobs)
                derived.log_metrics(metrics)
                derived.end()
                result.derived.append(DerivedPoint(knobs, metrics, dist.from_rank0(
                    derived.run_id) if dist.parallel else derived.run_id))
        result.ok = True
        if on_model is not None:
            on_model(model)
        run.end("FINISHED")
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C; Ray Tune stopping a trial's thread
        run.end("KILLED")
        raise
    except TrialStopped as stop:
        result.stopped_at, result.stop_reason = stop.epoch, stop.reason
        result.metrics = stop.metrics
        run.set_tags({TAG_STOPPED_EARLY: str(stop.epoch), TAG_STOP_REASON: stop.reason[:5000]})
        run.end("KILLED")
    except Exception as exc:  # a trial's own failure must not stop the search
        result.error = _describe(exc, spec)
        run.set_tags({"condsearch.error": result.error[:5000],
                      "condsearch.traceback": traceback.format_exc()[-5000:]})
        if dist.parallel and not _agreed(exc):
            # only this rank may have met it: the others may wait in a collective, so the
            # group restarts (Ray Train) and this attempt's run ends as a killed one
            run.end("KILLED")
            raise
        run.end("FAILED")
    finally:
        # Reference counting frees the model and its data here; a full gc.collect() cost about
        # 0.5 s a trial (measured) and freed nothing the process kept.
        del model
        _use_threads(threads)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
    return result
