"""Export a point of a search: its architecture, weights and recorded metrics, from MLflow."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from condsearch.orchestrate import WorkdirState

from condsearch.export._files import (
    ARCH_FILE,
    EXPORT_FILES,
    HASHED_FILES,
    MANIFEST_KEY,
    METRICS_FILE,
    WEIGHTS_FILE,
    ExportError,
    sha256,
)


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
                 pick: str | None = None, register: str | None = None,
                 force: bool = False) -> Path:
    """Write the chosen point of the search in `workdir` to `out`; return `out`.

    `trial` names any completed point by its study trial number; `pick` chooses on the front
    (knee, max-accuracy, min-flops). `register` also registers it in the MLflow Model Registry.

    The files are written into a temporary directory beside `out` and renamed into place, so
    `out` never holds a partial export. `out` may be absent, an empty directory or a previous
    export (which is replaced); any other directory is refused unless `force`, which writes the
    export's files into it and keeps its other files.
    """
    from condsearch.orchestrate import all_points, pick_point

    out = Path(out)
    replace = check_out(out, force)
    state, points = all_points(workdir)
    point = pick_point(points, [(n, d) for n, d in state.objectives], trial=trial, pick=pick)
    if not point.weights_run_id:
        raise ExportError(f"trial {point.number} has no weights run recorded")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
        staging.mkdir()  # not mkdtemp: the export keeps the permissions the umask gives
    except OSError as exc:
        raise ExportError(f"{out}: cannot write here: {exc.strerror or exc}") from None
    try:
        metrics = _write(state, point, staging)
        _move_into_place(staging, out, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if register:
        metrics["registered"] = _register(state.tracking_uri, point, out, register,
                                          pick or f"trial-{point.number}")
        _write_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return out


def check_out(out: Path, force: bool = False) -> str:
    """How `out` is to receive an export: "new" (absent or an empty directory), "replace" (a
    previous export) or "into" (another directory, with `force`); ExportError otherwise."""
    for part in (out, *out.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                where = "is a file" if part == out else f"cannot be created: {part} is a file"
                raise ExportError(f"{out}: not a directory ({where}); choose another --out")
            break
    if not out.is_dir():
        return "new"
    names = {p.name for p in out.iterdir()}
    if not names:
        return "new"
    if names == set(EXPORT_FILES) and not out.is_symlink():
        return "replace"
    if force:
        return "into"
    raise ExportError(f"{out}: directory is not empty and not a previous export (it holds "
                      f"{len(names)} other entries); choose another --out, or pass --force to "
                      "write the export's files into it")


def _write(state: Any, point: Any, staging: Path) -> dict[str, Any]:
    """Write the export's files into `staging`; return its metrics."""
    with tempfile.TemporaryDirectory(dir=staging) as tmp:
        weights = _download(state.tracking_uri, point.weights_run_id, WEIGHTS_FILE, tmp)
        arch_path = _download(state.tracking_uri, point.weights_run_id, ARCH_FILE, tmp)
        arch: dict[str, Any] = yaml.safe_load(arch_path.read_text())
        shutil.copyfile(weights, staging / WEIGHTS_FILE)
    arch["inference"] = dict(point.knobs)
    (staging / ARCH_FILE).write_text(yaml.safe_dump(arch, sort_keys=False))
    metrics = {
        "trial": point.number, "trained_trial": point.trial, "derived": point.derived,
        "split": "val", "values": point.values, "metrics": point.metrics, "knobs": point.knobs,
        "on_front": point.on_front, "run_id": point.run_id,
        "weights_run_id": point.weights_run_id, "tracking_uri": state.tracking_uri,
        "weights_sha256": sha256(staging / WEIGHTS_FILE),
        MANIFEST_KEY: {name: sha256(staging / name) for name in HASHED_FILES},
    }
    (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    for name in EXPORT_FILES:
        with open(staging / name, "rb") as f:
            os.fsync(f.fileno())
    return metrics


def _move_into_place(staging: Path, out: Path, how: str) -> None:
    """Rename the finished export in `staging` to `out`."""
    if how == "into":  # another directory (--force): its other files stay
        for name in (WEIGHTS_FILE, ARCH_FILE, METRICS_FILE):  # metrics (and its hash) last
            os.replace(staging / name, out / name)
        return
    if how == "replace" and out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "export")
        try:
            os.rename(staging, out)
        except OSError:
            os.replace(old / "export", out)  # put the previous export back
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(staging, out)  # absent, or an empty directory (which a rename replaces)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


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
