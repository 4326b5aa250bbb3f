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


class TrackingUnavailable(UserWarning):
    """MLflow could not be reached after its retries; the trial went on without it."""


class TrialRun:
    """A child run under `parent_run_id`; every method is a no-op when `target` is None.

    A tracking server that stays unreachable after MLflow's own HTTP retries must not kill the
    trial: the failing call is dropped with a TrackingUnavailable warning, the run stops
    logging, and the trial's result still reaches the study (which does not depend on MLflow).
    """

    def __init__(self, target: TrackingTarget | None, name: str, tags: dict[str, str],
                 parent_run_id: str | None = None) -> None:
        self.client = None
        self.run_id: str | None = None
        if target is None:
            return
        from mlflow import MlflowClient

        self.uri = target.uri
        self.client = MlflowClient(target.uri)
        all_tags = {"mlflow.runName": name, "mlflow.parentRunId": parent_run_id or target.parent_run_id}
        all_tags.update(tags)
        run = self._call(self.client.create_run, target.experiment_id, tags=all_tags)
        self.run_id = run.info.run_id if run is not None else None

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        if self.client is None:
            return None
        try:
            return method(*args, **kwargs)
        except Exception as exc:  # any transport or server error: tracking is best effort
            import warnings

            self.client = None
            warnings.warn(f"MLflow at {self.uri} failed after its retries ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); this trial goes on without logging to it, and "
                          "its result is still recorded in the study", TrackingUnavailable,
                          stacklevel=3)
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self._call(self._batch, params=items[start : start + 100])

    def _batch(self, **kwargs: Any) -> None:
        self.client.log_batch(self.run_id, **kwargs)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        if items:
            self._call(self._batch, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._call(self._batch, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, directory: str) -> None:
        if self.client is not None:
            self._call(self.client.log_artifacts, self.run_id, directory)

    def end(self, status: str = "FINISHED") -> None:
        if self.client is not None:
            self._call(self.client.set_terminated, self.run_id, status)
