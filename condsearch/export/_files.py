"""The files of an exported model and their integrity check."""

from __future__ import annotations

import hashlib
from pathlib import Path

ARCH_FILE = "architecture.yaml"
WEIGHTS_FILE = "weights.safetensors"
METRICS_FILE = "metrics.json"
#: exactly the files of an export: a directory holding these and nothing else is a previous export
EXPORT_FILES = (ARCH_FILE, WEIGHTS_FILE, METRICS_FILE)


class ExportError(Exception):
    """An export cannot be written or loaded: the message says which file and why."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
