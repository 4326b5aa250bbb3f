"""Export a point of a search: its architecture, weights and recorded metrics, from MLflow."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from condsearch.orchestrate import WorkdirState

from condsearch.export._files import ARCH_FILE, METRICS_FILE, WEIGHTS_FILE, ExportError, sha256


def _download(uri: str, run_id: str, name: str, dst: str) -> Path:
    import mlflow

    # One small file each: MLflow's progress bars would only clutter the command's output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    try:
        return Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=name, dst_path=dst, tracking_uri=uri))
    except Exception as exc:  # an MLflow error names the store; ours says what to do
        raise ExportError(
            f"cannot download {name} of run {run_id} from {uri}: {exc}; is the tracking "
            "store (and its artifact store) reachable from here?") from exc


def export_point(workdir: str | Path | WorkdirState, out: str | Path, trial: int | None = None,
                 pick: str | None = None, register: str | None = None) -> Path:
    """Write the chosen point of the search in `workdir` to `out`; return `out`.

    `trial` names any completed point by its study trial number; `pick` chooses on the front
    (knee, max-accuracy, min-flops). `register` also registers it in the MLflow Model Registry.
    """
    from condsearch.orchestrate import all_points, pick_point

    state, points = all_points(workdir)
    point = pick_point(points, [(n, d) for n, d in state.objectives], trial=trial, pick=pick)
    if not point.weights_run_id:
        raise ExportError(f"trial {point.number} has no weights run recorded")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        weights = _download(state.tracking_uri, point.weights_run_id, WEIGHTS_FILE, tmp)
        arch_path = _download(state.tracking_uri, point.weights_run_id, ARCH_FILE, tmp)
        arch: dict[str, Any] = yaml.safe_load(arch_path.read_text())
        shutil.copyfile(weights, out / WEIGHTS_FILE)
    arch["inference"] = dict(point.knobs)
    (out / ARCH_FILE).write_text(yaml.safe_dump(arch, sort_keys=False))
    metrics = {
        "trial": point.number, "trained_trial": point.trial, "derived": point.derived,
        "split": "val", "values": point.values, "metrics": point.metrics, "knobs": point.knobs,
        "on_front": point.on_front, "run_id": point.run_id,
        "weights_run_id": point.weights_run_id, "tracking_uri": state.tracking_uri,
        "weights_sha256": sha256(out / WEIGHTS_FILE),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    if register:
        metrics["registered"] = _register(state.tracking_uri, point, out, register,
                                          pick or f"trial-{point.number}")
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return out


def _register(uri: str, point: Any, out: Path, name: str, label: str) -> dict[str, Any]:
    """Log the export beside the trial's weights and register it as a new model version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    alias = re.sub(r"[^A-Za-z0-9_-]", "-", label).strip("-") or "export"
    artifact_path = f"exports/{alias}-trial-{point.number}"
    client.log_artifacts(point.weights_run_id, str(out), artifact_path)
    source = f"{client.get_run(point.weights_run_id).info.artifact_uri}/{artifact_path}"
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    version = client.create_model_version(
        name, source, run_id=point.weights_run_id,
        tags={"condsearch.trial": str(point.number), "condsearch.derived": str(point.derived)},
        description=f"condsearch point {point.number}: {point.values}")
    client.set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": str(version.version), "alias": alias, "source": source}
