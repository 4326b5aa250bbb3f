"""Where a trial logs: the tracking server, experiment and parent run of its search."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrackingTarget:
    """Everything a worker needs to log a trial under its search's parent run."""

    uri: str
    experiment_id: str
    parent_run_id: str
    #: the user's tags (`--tag`), set on the parent run and on every trial and derived run
    tags: dict[str, str] = field(default_factory=dict, hash=False)
