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
    arch = yaml.safe_load((path / ARCH_FILE).read_text())
    metrics = json.loads((path / METRICS_FILE).read_text())
    expected, actual = metrics.get("weights_sha256"), sha256(path / WEIGHTS_FILE)
    if expected != actual:
        raise ExportError(
            f"{path / WEIGHTS_FILE}: sha256 {actual} does not match {expected} recorded in "
            f"{METRICS_FILE}; the weights were changed or corrupted, export them again")
    return arch, metrics


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
