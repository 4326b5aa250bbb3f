"""An MLflow run a trial logs into, by explicit run id (no global active-run state)."""

from __future__ import annotations

import math
import time
from typing import Any

from condsearch.track._target import TrackingTarget


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"dim": 8}} -> {"model.dim": 8}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class TrialRun:
    """A child run under `parent_run_id`; every method is a no-op when `target` is None."""

    def __init__(self, target: TrackingTarget | None, name: str, tags: dict[str, str],
                 parent_run_id: str | None = None) -> None:
        self.client = None
        self.run_id: str | None = None
        if target is None:
            return
        from mlflow import MlflowClient

        self.client = MlflowClient(target.uri)
        all_tags = {"mlflow.runName": name, "mlflow.parentRunId": parent_run_id or target.parent_run_id}
        all_tags.update(tags)
        self.run_id = self.client.create_run(target.experiment_id, tags=all_tags).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.client is None:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, directory: str) -> None:
        if self.client is not None:
            self.client.log_artifacts(self.run_id, directory)

    def end(self, status: str = "FINISHED") -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id, status)
