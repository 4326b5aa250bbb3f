"""Where a trial logs: the tracking server, experiment and parent run of its search."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrackingTarget:
    """Everything a worker needs to log a trial under its search's parent run."""

    uri: str
    experiment_id: str
    parent_run_id: str
