"""The files of an exported model and their integrity check.

`metrics.json` is the manifest: `files` maps `architecture.yaml` and `weights.safetensors` to
their sha256 (and `weights_sha256` repeats the weights' hash, as exports have always recorded
it). Everything `load_exported` and `evaluate_exported` read other than the manifest is covered
by it; `metrics.json` itself holds only what is reported (its edits change nothing that is
loaded or run) and the hashes (an edited hash refuses the file it names). The hashes detect a
changed or corrupted file, not a forger who rewrites the manifest too: that is why an export is
data, and code it names is imported only with `trust_code=True`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ARCH_FILE = "architecture.yaml"
WEIGHTS_FILE = "weights.safetensors"
METRICS_FILE = "metrics.json"
#: exactly the files of an export: a directory holding these and nothing else is a previous export
EXPORT_FILES = (ARCH_FILE, WEIGHTS_FILE, METRICS_FILE)
#: the files the manifest (`metrics.json`, key `files`) hashes: all that loading reads
HASHED_FILES = (ARCH_FILE, WEIGHTS_FILE)
MANIFEST_KEY = "files"


class ExportError(Exception):
    """An export cannot be written or loaded: the message says which file and why."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
