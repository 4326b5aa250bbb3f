"""Closing a trial's MLflow run from the driver, when its worker cannot (stopped or dead)."""

from __future__ import annotations

import warnings
from typing import Any

from condsearch.track._trial_runs import TrackingUnavailable


def end_trial_run(tracking: Any, run_id: str | None, status: str,
                  tags: dict[str, str] | None = None) -> None:
    """Tag a trial's run and end it with `status` (KILLED, FAILED); best effort: a failing MLflow
    warns (TrackingUnavailable) and the search goes on."""
    if tracking is None or not run_id:
        return
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking.uri)
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, str(value))
        client.set_terminated(run_id, status)
    except Exception as exc:  # any transport or server error: tracking is best effort
        warnings.warn(f"could not end the MLflow run {run_id} at {tracking.uri} as {status} "
                      f"({type(exc).__name__}: {str(exc)[:300]})", TrackingUnavailable,
                      stacklevel=2)
