"""What a trial reports to Ray Tune each epoch and at its end, and how the driver reads it back.

Every report carries the same keys (Ray's strict metric check wants the searcher's and the
scheduler's metrics in each): `loss`, `accuracy`, every objective metric of the space (`flops`,
and `params` / `latency_ms` when they are objectives), `epoch`, `flops_samples` and the MLflow
run id. An epoch's FLOPs (and latency) are measured on a fixed validation subset
(`subset_indices`); the final report carries the full-validation values and the whole result.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from condsearch._names import OBJECTIVE_METRICS
from condsearch.orchestrate._trial import DerivedPoint, TrialResult
from condsearch.tune._keys import (
    ACCURACY,
    EPOCH,
    FLOPS_SAMPLES,
    LOSS,
    RESULT,
    RUN_ID,
)


def metric_keys(objectives: list[tuple[str, str]]) -> list[str]:
    """The report keys of a space's objectives, in study order (the searcher's metrics)."""
    return [OBJECTIVE_METRICS[name] for name, _ in objectives]


def epoch_report(epoch: int, record: dict[str, float], measured: dict[str, float],
                 objectives: list[tuple[str, str]], run_id: str | None,
                 samples: int) -> dict[str, Any]:
    """An epoch's report: its loss and accuracy, and the objective metrics `measured` holds."""
    report = {EPOCH: epoch, LOSS: float(record["train_loss"]),
              ACCURACY: float(record["val_accuracy"]), FLOPS_SAMPLES: samples,
              RUN_ID: run_id or ""}
    for key in [*metric_keys(objectives), "params"]:
        report.setdefault(key, float(measured.get(key, math.nan)))
    return report


def final_report(result: TrialResult, epoch: int, loss: float, objectives: list[tuple[str, str]],
                 samples: int) -> dict[str, Any]:
    """The trial's last report: full-validation metrics (NaN where it failed) and the result."""
    report = {EPOCH: epoch, LOSS: float(loss), FLOPS_SAMPLES: samples,
              RUN_ID: result.run_id or ""}
    for key in [ACCURACY, *metric_keys(objectives)]:
        report[key] = float(result.metrics.get(key, math.nan))
    report[RESULT] = json.dumps(asdict(result))
    return report


def result_of(report: dict[str, Any] | None) -> TrialResult | None:
    """The TrialResult a final report carries, or None for an epoch's report."""
    if not report or RESULT not in report:
        return None
    data = json.loads(report[RESULT])
    data["derived"] = [DerivedPoint(**d) for d in data.get("derived", [])]
    return TrialResult(**data)


def report_values(report: dict[str, Any] | None,
                  objectives: list[tuple[str, str]]) -> dict[str, float | int | str]:
    """What the study keeps of a report: epoch, loss, accuracy, the objective metrics, the Ray
    iteration and the run id (non-finite values dropped: Optuna stores attributes as JSON)."""
    if not report:
        return {}
    kept: dict[str, float | int | str] = {}
    for key in [EPOCH, "training_iteration", LOSS, ACCURACY, *metric_keys(objectives),
                FLOPS_SAMPLES]:
        value = report.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            kept[key] = value
    if report.get(RUN_ID):
        kept[RUN_ID] = str(report[RUN_ID])
    return kept
