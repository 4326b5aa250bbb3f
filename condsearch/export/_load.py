"""Load an exported model, refusing weights whose hash does not match metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from condsearch.export._files import ARCH_FILE, METRICS_FILE, WEIGHTS_FILE, ExportError, sha256


def read_export(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The architecture and metrics of an export, after checking the weights' sha256."""
    path = Path(path)
    for name in (ARCH_FILE, WEIGHTS_FILE, METRICS_FILE):
        if not (path / name).is_file():
            raise ExportError(f"{path}: not an export: {name} is missing")
    arch = _read(path / ARCH_FILE, yaml.safe_load, yaml.YAMLError)
    metrics = _read(path / METRICS_FILE, json.loads, json.JSONDecodeError)
    expected, actual = metrics.get("weights_sha256"), sha256(path / WEIGHTS_FILE)
    if expected != actual:
        raise ExportError(
            f"{path / WEIGHTS_FILE}: sha256 {actual} does not match {expected} recorded in "
            f"{METRICS_FILE}; the weights were changed or corrupted, export them again")
    return arch, metrics


def _read(file: Path, parse: Any, errors: type[Exception]) -> dict[str, Any]:
    """A mapping parsed from an export's file; ExportError naming the file when it is empty,
    truncated or corrupt."""
    try:
        data = parse(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExportError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except (errors, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())
        raise ExportError(f"{file}: corrupt or truncated ({detail}); export it again") from None
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        raise ExportError(f"{file}: corrupt or truncated ({what}); export it again")
    return data


def load_exported(path: str | Path, device: str = "cpu"):
    """Rebuild an exported model (eval mode) from its directory, verifying its weights."""
    from safetensors.torch import load_file

    from condsearch.models import build_model
    from condsearch.space import BackboneUnavailable

    arch, _ = read_export(path)
    try:
        model = build_model(arch, arch["io"])
    except BackboneUnavailable as exc:
        raise ExportError(f"{path}: {ARCH_FILE} names the backbone "
                          f"{arch['model']['backbone']!r}, which cannot be built here: {exc}"
                          ) from None
    try:
        model.load_state_dict(load_file(str(Path(path) / WEIGHTS_FILE), device=device))
    except (RuntimeError, OSError) as exc:
        raise ExportError(f"{path}: weights do not fit {ARCH_FILE}: {exc}") from exc
    return model.to(device).eval()


def evaluate_exported(path: str | Path, split: str = "val", device: str = "cpu"
                      ) -> dict[str, float]:
    """Re-evaluate an export on a split of its task: accuracy and the FLOPs figures."""
    from condsearch.data import load_task
    from condsearch.space import TRAIN_PARAMS, complete
    from condsearch.train import evaluate

    arch, _ = read_export(path)
    model = load_exported(path, device)
    batch = int(complete(TRAIN_PARAMS, arch.get("train"))["eval_batch_size"])
    evaluation = evaluate(model, load_task(arch["task"]), split, batch, device)
    return {**evaluation.summary(), **evaluation.stats}
