"""The data sets that ship with condsearch or its dependencies: parity and scikit-learn digits."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from condsearch.data._task import Task, as_images, make_task

#: parity entries -1, 0, +1 are token ids 0, 1, 2
PARITY_VOCAB = 3
#: the largest value of a digits pixel
DIGITS_PEAK = 16.0


def parity_arrays(size: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The AdaTape parity task: x ∈ {1, 0, −1}^L uniformly, label = (number of +1) mod 2.

    Returned as token ids (−1 → 0, 0 → 1, +1 → 2).
    """
    rng = np.random.default_rng(seed)
    values = rng.integers(-1, 2, size=(size, length))
    labels = (values == 1).sum(axis=1) % 2
    return (values + 1).astype(np.int64), labels.astype(np.int64)


def parity(spec: dict[str, Any]) -> Task:
    """The generated parity task: token sequences, which no `normalize` touches."""
    x, y = parity_arrays(int(spec.get("size", 12000)), int(spec.get("length", 16)),
                         int(spec.get("seed", 0)))
    task = make_task("parity", x, y, spec)
    task.vocab_size = PARITY_VOCAB
    return task


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits images (float32 N×1×8×8, values 0..16) and labels, parsed once per process.

    scikit-learn parses its CSV on every call, which cost a search about 27 ms a trial. The
    arrays are read-only because every trial shares them.
    """
    path = _digits_csv()
    if path is not None:
        data = np.loadtxt(path, delimiter=",")  # what load_digits reads, without its import
        pixels, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, target = bunch.images, bunch.target
    images, labels = as_images(pixels), np.asarray(target, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _digits_csv() -> Path | None:
    """scikit-learn's bundled digits file, found without importing scikit-learn (0.9 s of the
    first trial, scipy included); None if this scikit-learn keeps it elsewhere."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def digits(spec: dict[str, Any]) -> Task:
    """scikit-learn's bundled 8×8 digits (1,797 images, values 0..16); `max` (the default)
    divides by 16, the format's maximum, so the values lie in [0, 1]."""
    images, labels = digits_arrays()
    return make_task("digits", images, labels, spec, normalize="max", peak=DIGITS_PEAK)
