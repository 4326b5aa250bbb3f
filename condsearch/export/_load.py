"""Load an exported model: an export is data, checked before anything is built or imported.

Every file loading reads is checked against the sha256 its manifest (`metrics.json`) records;
the sizes `architecture.yaml` states are checked against the weights' header, on a model built
on the `meta` device (no memory), before the model is allocated; and code the export names (a
backbone or a task factory by import path `module:function`) is imported only when the caller
passes `trust_code=True`. A backbone known here by name (built in, registered in this process,
or an installed package's entry point) needs no trust.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from condsearch.export._files import (
    ARCH_FILE,
    HASHED_FILES,
    MANIFEST_KEY,
    METRICS_FILE,
    WEIGHTS_FILE,
    ExportError,
    sha256,
)


def read_export(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The architecture and metrics of an export, after checking each file's sha256 against
    the manifest in metrics.json. Nothing the architecture names is imported."""
    path = Path(path)
    for name in (ARCH_FILE, WEIGHTS_FILE, METRICS_FILE):
        if not (path / name).is_file():
            raise ExportError(f"{path}: not an export: {name} is missing")
    metrics = _read(path / METRICS_FILE, json.loads, json.JSONDecodeError)
    for name, expected in _recorded_hashes(path, metrics):
        actual = sha256(path / name)
        if expected != actual:
            raise ExportError(
                f"{path / name}: sha256 {actual} does not match {expected} recorded in "
                f"{METRICS_FILE}; the file was changed or corrupted, export it again")
    arch = _read(path / ARCH_FILE, yaml.safe_load, yaml.YAMLError)
    return arch, metrics


def _recorded_hashes(path: Path, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    """(file, recorded sha256) for every file to check. An export written before the manifest
    records only `weights_sha256`: its weights are checked, its architecture cannot be."""
    checks = [(WEIGHTS_FILE, metrics.get("weights_sha256"))]
    manifest = metrics.get(MANIFEST_KEY)
    if manifest is None and "weights_sha256" in metrics:
        return checks
    if not isinstance(manifest, dict):
        raise ExportError(f"{path / METRICS_FILE}: no manifest of the files' sha256 "
                          f"('{MANIFEST_KEY}'); export it again")
    return checks + [(name, manifest.get(name)) for name in HASHED_FILES]


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


def _task_factory(arch: dict[str, Any]) -> str | None:
    """The `module:function` task factory the architecture names, if any."""
    from condsearch.data._load import LOADERS

    task = arch.get("task")
    dataset = task.get("dataset") if isinstance(task, dict) else task
    if isinstance(dataset, str) and dataset not in LOADERS and ":" in dataset:
        return dataset
    return None


def _refuse_untrusted(path: Path, arch: dict[str, Any], with_task: bool) -> None:
    """ExportError naming the code an untrusted export would import; nothing is imported."""
    from condsearch.models._build import UntrustedBackbone, backbone_of
    from condsearch.space import BackboneUnavailable

    code = []
    try:
        backbone_of(_model_arch(path, arch), trust_code=False)
    except UntrustedBackbone as exc:
        code.append(f"the backbone factory {exc.path!r}")
    except BackboneUnavailable:
        pass  # load_exported says what cannot be built here
    factory = _task_factory(arch) if with_task else None
    if factory:
        code.append(f"the task factory {factory!r}")
    if code:
        raise ExportError(
            f"{path / ARCH_FILE} would import {' and '.join(code)}, which is code: an export is "
            "data and code it names is imported only when trusted; if you trust this export, "
            "pass trust_code=True")


def _model_arch(path: Path, arch: dict[str, Any]) -> dict[str, Any]:
    model = arch.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("backbone"), str):
        raise ExportError(f"{path / ARCH_FILE}: model.backbone is missing or not a name")
    if not isinstance(arch.get("io"), dict):
        raise ExportError(f"{path / ARCH_FILE}: io is missing or not a mapping")
    return arch


def _check_sizes(path: Path, arch: dict[str, Any], trust_code: bool) -> None:
    """Refuse an architecture whose tensors' shapes differ from the weights' header, comparing
    a model built on the meta device (no memory) with the header (no tensor is read)."""
    import torch
    from safetensors import safe_open

    from condsearch.models import build_model

    with torch.device("meta"):
        skeleton = build_model(arch, arch["io"], trust_code=trust_code)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    del skeleton
    try:
        with safe_open(str(path / WEIGHTS_FILE), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ExportError(f"{path / WEIGHTS_FILE}: not a safetensors file: {exc}") from None
    for key, shape in expected.items():
        if key not in stored:
            raise ExportError(f"{path / ARCH_FILE} does not fit {WEIGHTS_FILE}: the "
                              f"architecture has tensor {key} {list(shape)}, the weights do "
                              "not; export it again")
        if stored[key] != shape:
            raise ExportError(f"{path / ARCH_FILE} does not fit {WEIGHTS_FILE}: tensor {key} "
                              f"is {list(shape)} in the architecture, {list(stored[key])} in "
                              "the weights; export it again")
    extra = [k for k in stored if k not in expected]
    if extra:
        raise ExportError(f"{path / ARCH_FILE} does not fit {WEIGHTS_FILE}: the weights have "
                          f"tensor {extra[0]}, the architecture does not; export it again")


def load_exported(path: str | Path, device: str = "cpu", trust_code: bool = False):
    """Rebuild an exported model (eval mode) from its directory, verifying its files.

    An export is data: a backbone it names by import path (`model.backbone` or the recorded
    `factory`) is code, imported only with `trust_code=True`; a backbone known here by name
    needs no trust. The architecture's sizes are checked against the weights before the model
    is allocated."""
    from safetensors.torch import load_file

    from condsearch.models import build_model
    from condsearch.space import BackboneUnavailable

    path = Path(path)
    arch, _ = read_export(path)
    _model_arch(path, arch)
    if not trust_code:
        _refuse_untrusted(path, arch, with_task=False)
    try:
        _check_sizes(path, arch, trust_code)
        model = build_model(arch, arch["io"], trust_code=trust_code)
    except BackboneUnavailable as exc:
        raise ExportError(f"{path}: {ARCH_FILE} names the backbone "
                          f"{arch['model']['backbone']!r}, which cannot be built here: {exc}"
                          ) from None
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE), device=device))
    except (RuntimeError, OSError) as exc:
        raise ExportError(f"{path}: weights do not fit {ARCH_FILE}: {exc}") from exc
    return model.to(device).eval()


def evaluate_exported(path: str | Path, split: str = "val", device: str = "cpu",
                      trust_code: bool = False) -> dict[str, float]:
    """Re-evaluate an export on a split of its task: accuracy and the FLOPs figures.

    A task factory the export names (`task.dataset: module:function`) is code, like a backbone
    named by import path: both are imported only with `trust_code=True`."""
    from condsearch.data import load_task
    from condsearch.space import TRAIN_PARAMS, complete
    from condsearch.train import evaluate

    path = Path(path)
    arch, _ = read_export(path)
    _model_arch(path, arch)
    if not trust_code:
        _refuse_untrusted(path, arch, with_task=True)
    model = load_exported(path, device, trust_code=trust_code)
    batch = int(complete(TRAIN_PARAMS, arch.get("train"))["eval_batch_size"])
    task = load_task(arch["task"], trust_code=trust_code)
    evaluation = evaluate(model, task, split, batch, device)
    return {**evaluation.summary(), **evaluation.stats}
