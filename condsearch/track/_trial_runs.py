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


#: a long trial's buffered params, metrics and tags reach MLflow at least this often
FLUSH_INTERVAL_S = 10.0


class TrialRun:
    """A child run under `parent_run_id`; every method is a no-op when `target` is None.

    Params, metrics and tags are buffered and written in one `log_batch` when the run ends (or,
    in a long trial, at the first logging call FLUSH_INTERVAL_S after the last write): each
    MLflow call is a store transaction, and one per logging call cost a short trial about
    30 ms. What MLflow holds when the run ends is the same.

    A tracking server that stays unreachable after MLflow's own HTTP retries must not kill the
    trial: the failing call is dropped with a TrackingUnavailable warning, the run stops
    logging, and the trial's result still reaches the study (which does not depend on MLflow).
    """

    def __init__(self, target: TrackingTarget | None, name: str, tags: dict[str, str],
                 parent_run_id: str | None = None) -> None:
        self.client = None
        self.run_id: str | None = None
        self.artifact_uri: str | None = None
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._metrics: list[Any] = []
        self._flushed = time.monotonic()
        if target is None:
            return
        from mlflow import MlflowClient

        self.uri = target.uri
        self.client = MlflowClient(target.uri)
        # The user's tags first: condsearch's own keys are never replaced by them.
        all_tags = {**target.tags, "mlflow.runName": name,
                    "mlflow.parentRunId": parent_run_id or target.parent_run_id, **tags}
        run = self._call(self.client.create_run, target.experiment_id, tags=all_tags)
        if run is not None:
            self.run_id, self.artifact_uri = run.info.run_id, run.info.artifact_uri

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
        """Buffer `params` (nested dicts flattened to dotted keys)."""
        if self.client is not None:
            self._params.update((k, str(v)[:6000]) for k, v in flatten(params).items())
            self._flush_if_due()

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Buffer the finite values of `metrics` at `step`, stamped now."""
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items()
                             if math.isfinite(float(v)))
        self._flush_if_due()

    def set_tags(self, tags: dict[str, str]) -> None:
        """Buffer `tags`; a later value of a key replaces an earlier one, as in MLflow."""
        if self.client is not None:
            self._tags.update((k, str(v)) for k, v in tags.items())
            self._flush_if_due()

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._flushed >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Write the buffered params, metrics and tags in one `log_batch`."""
        params, tags, metrics = self._params, self._tags, self._metrics
        self._params, self._tags, self._metrics = {}, {}, []
        self._flushed = time.monotonic()
        if self.client is None or not (params or tags or metrics):
            return
        from mlflow.entities import Param, RunTag

        # MlflowClient.log_batch splits what exceeds MLflow's per-request limits.
        self._call(self.client.log_batch, self.run_id, metrics=metrics,
                   params=[Param(k, v) for k, v in params.items()],
                   tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifacts(self, directory: str) -> None:
        """Upload the files in `directory` to the run's artifact root."""
        if self.client is not None:
            self._call(self._upload, directory)

    def _upload(self, directory: str) -> None:
        # The artifact root came with create_run: MlflowClient.log_artifacts would fetch the
        # whole run again to learn it (16 ms) and keep a repository object per run it saw.
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

        uri = add_databricks_profile_info_to_artifact_uri(self.artifact_uri, self.uri)
        get_artifact_repository(uri, tracking_uri=self.uri).log_artifacts(directory)

    def end(self, status: str = "FINISHED") -> None:
        """Write what is buffered, then close the run with `status`."""
        self.flush()
        if self.client is not None:
            self._call(self.client.set_terminated, self.run_id, status)


def end_runs(uri: str, run_ids: list[str], status: str, tags: dict[str, str] | None = None
             ) -> list[str]:
    """Tag and close runs whose work the study did not take (a trial its search could not
    record): each gets `tags` and `status` (FAILED, KILLED), even one a trial had closed as
    FINISHED. Returns the ids closed; raises what MLflow raises (callers treat it as best
    effort)."""
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(uri)
    closed = []
    for run_id in dict.fromkeys(r for r in run_ids if r):
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
        client.set_terminated(run_id, status)
        closed.append(run_id)
    return closed


def log_stepped(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log `metrics` (finite values) to a run another process or object may be writing, at
    `step`, stamped now, in one request (a rung result to a running trial's run)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
    if batch:
        MlflowClient(uri).log_batch(run_id, metrics=batch)
