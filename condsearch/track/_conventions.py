"""MLflow's own conventions a search follows: its environment variables, an active run, tags.

What each source asks is plain data here; which source wins is decided by the caller
(`orchestrate/_session.py`), which knows the workdir and what it recorded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT_NAME = "MLFLOW_EXPERIMENT_NAME"
ENV_EXPERIMENT_ID = "MLFLOW_EXPERIMENT_ID"
ENV_RUN_ID = "MLFLOW_RUN_ID"

#: tags condsearch writes itself on every run; a user's tag may not replace them
RESERVED_TAGS = ("mlflow.runName", "mlflow.parentRunId")
RESERVED_PREFIX = "condsearch."


class TrackingChoiceError(ValueError):
    """What was asked of MLflow cannot be used: the message says what to change."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """TrackingChoiceError at once when nothing listens at an http(s) tracking URI's host and
    port (MLflow's client would retry for minutes, printing a warning each time)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TrackingChoiceError(f"cannot reach the MLflow tracking server at {uri} ({reason}): "
                                  "start it (condsearch ui, or mlflow server) or use another "
                                  "--tracking-uri") from None


@dataclass(frozen=True)
class TrackingRequest:
    """Where a search should log, as one source (flags, the environment, ...) asks it."""

    uri: str | None = None
    experiment_name: str | None = None
    experiment_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict, hash=False)

    def names_experiment(self) -> bool:
        """Whether this source names an experiment at all."""
        return self.experiment_name is not None or self.experiment_id is not None


@dataclass(frozen=True)
class ActiveRun:
    """The caller's active `mlflow.start_run()`: its store, experiment and id."""

    uri: str
    experiment_id: str
    run_id: str


def absolute_uri(uri: str) -> str:
    """`uri` with a relative SQLite or plain file path made absolute, so a workdir's record
    means the same store from any current directory."""
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{Path(path).resolve()}{sep}{query}"
        return uri
    if ":" not in uri:  # a plain path: MLflow's local file store
        return Path(uri).resolve().as_uri()
    return uri


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def from_environment() -> TrackingRequest:
    """What MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME and MLFLOW_EXPERIMENT_ID ask."""
    uri = _env(ENV_TRACKING_URI)
    return TrackingRequest(uri=absolute_uri(uri) if uri else None,
                           experiment_name=_env(ENV_EXPERIMENT_NAME),
                           experiment_id=_env(ENV_EXPERIMENT_ID))


def active_run() -> ActiveRun | None:
    """The run a search nests under: an enclosing `mlflow.start_run()` in this thread, else the
    run MLFLOW_RUN_ID names (as `mlflow run` sets it); None when there is neither."""
    return _fluent_run() or _env_run()


def _fluent_run() -> ActiveRun | None:
    """The enclosing `mlflow.start_run()` (MLflow not loaded: none, and it is not imported)."""
    if "mlflow" not in sys.modules:
        return None
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    return ActiveRun(uri=absolute_uri(mlflow.get_tracking_uri()),
                     experiment_id=run.info.experiment_id, run_id=run.info.run_id)


def _env_run() -> ActiveRun | None:
    """The run MLFLOW_RUN_ID names, in the store MLflow's settings name."""
    run_id = _env(ENV_RUN_ID)
    if run_id is None:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = absolute_uri(mlflow.get_tracking_uri())
    try:
        run = mlflow.MlflowClient(uri).get_run(run_id)
    except MlflowException:
        raise TrackingChoiceError(f"{ENV_RUN_ID} {run_id}: no such run at {uri}") from None
    return ActiveRun(uri=uri, experiment_id=run.info.experiment_id, run_id=run_id)


def parse_tags(items: Iterable[str]) -> dict[str, str]:
    """`["team=nas", ...]` (the CLI's `--tag KEY=VALUE`) as a dict; ValueError when malformed."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrackingChoiceError(f"--tag {item!r}: expected KEY=VALUE, e.g. --tag team=nas")
        tags[key.strip()] = value
    return check_tags(tags)


def check_tags(tags: Mapping[str, object] | None) -> dict[str, str]:
    """A user's tags as strings, refusing the keys condsearch writes on its own runs."""
    checked: dict[str, str] = {}
    for key, value in (tags or {}).items():
        key = str(key)
        if not key.strip():
            raise TrackingChoiceError("a tag needs a non-empty key")
        if key in RESERVED_TAGS or key.startswith(RESERVED_PREFIX):
            raise TrackingChoiceError(f"tag {key!r} is written by condsearch itself; "
                                      f"choose another key (not {', '.join(RESERVED_TAGS)} "
                                      f"or {RESERVED_PREFIX}*)")
        checked[key] = str(value)
    return checked


def experiment_by_id(uri: str, experiment_id: str) -> tuple[str, str]:
    """(id, name) of the live experiment `experiment_id` at `uri`; refused when absent."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from condsearch.track._store import quiet_mlflow

    quiet_mlflow()
    try:
        experiment = MlflowClient(uri).get_experiment(str(experiment_id))
    except MlflowException:
        experiment = None
    if experiment is None:
        raise TrackingChoiceError(f"no MLflow experiment with id {experiment_id!r} at {uri}")
    _refuse_deleted(experiment, uri)
    return experiment.experiment_id, experiment.name


def experiment_by_name(uri: str, name: str, artifact_dir: Path | None) -> tuple[str, str]:
    """(id, name) of experiment `name` at `uri`, created (artifacts under `artifact_dir`) if
    absent; refused when it is deleted, as MLflow would refuse its runs."""
    from mlflow import MlflowClient

    from condsearch.track._store import open_experiment, quiet_mlflow

    quiet_mlflow()
    experiment = MlflowClient(uri).get_experiment_by_name(name)
    if experiment is not None:
        _refuse_deleted(experiment, uri)
        return experiment.experiment_id, experiment.name
    return open_experiment(uri, name, artifact_dir), name


def experiment_name(uri: str, experiment_id: str) -> str:
    """The name of experiment `experiment_id` at `uri` ("" when MLflow cannot say)."""
    from mlflow import MlflowClient

    try:
        return MlflowClient(uri).get_experiment(str(experiment_id)).name
    except Exception:  # a record is still usable without its experiment's name
        return ""


def _refuse_deleted(experiment: object, uri: str) -> None:
    if getattr(experiment, "lifecycle_stage", "active") == "deleted":
        raise TrackingChoiceError(
            f"the MLflow experiment {experiment.name!r} (id {experiment.experiment_id}) at "
            f"{uri} is deleted; restore it (mlflow experiments restore) or choose another")
