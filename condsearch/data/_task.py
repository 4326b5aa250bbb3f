"""A task: three splits of (inputs, labels) tensors and what a model needs to know of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor]


class TaskError(Exception):
    """A data set cannot be loaded: the message says what is missing and how to get it."""


@dataclass
class Task:
    """Train, validation and test splits, with the input description a backbone is built from.

    `input_kind` is "image" (float inputs of shape C×H×W) or "sequence" (integer token ids of
    length L, ids below `vocab_size`).
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_kind: str
    input_shape: list[int]
    num_classes: int
    vocab_size: int | None = None

    def info(self) -> dict[str, Any]:
        """The plain description `build_model` reads (and export stores beside the arch)."""
        return {"input_kind": self.input_kind, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "vocab_size": self.vocab_size}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s} {len(getattr(self, s)[1])}" for s in ("train", "val", "test"))
        return (f"Task({self.name!r}: {sizes}; {self.input_kind} {self.input_shape}, "
                f"{self.num_classes} classes)")


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) with about `fraction` of every class held out."""
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        take = int(round(fraction * idx.size))
        held.append(idx[:take])
    held_out = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    mask = np.ones(labels.size, dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out


def make_task(name: str, x: np.ndarray, y: np.ndarray, spec: dict[str, Any],
              test: tuple[np.ndarray, np.ndarray] | None = None) -> Task:
    """Split arrays into a Task by the spec's seed and fractions.

    With `test` given (a data set's own test split) only validation is carved from `x`;
    otherwise test is carved too. `train_limit` caps the training split after splitting.
    """
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    y = np.asarray(y).astype(np.int64)
    if test is None:
        test_fraction = float(spec.get("test_fraction", 0.2))
        rest, test_idx = stratified_split(y, test_fraction, rng)
        test = (x[test_idx], y[test_idx])
        x, y = x[rest], y[rest]
    val_fraction = float(spec.get("val_fraction", 0.2))
    # Relative to what is left, so val_fraction stays a fraction of the whole data set.
    whole = len(y) + len(test[1])
    train_idx, val_idx = stratified_split(y, min(0.95, val_fraction * whole / max(1, len(y))), rng)
    limit = spec.get("train_limit")
    if limit:
        train_idx = np.sort(rng.permutation(train_idx)[: int(limit)])
    if train_idx.size == 0 or val_idx.size == 0:
        raise TaskError(f"{name}: too few samples ({len(y) + len(test[1])}) for a train and a "
                        "validation split; lower val_fraction or give more data")
    kind, shape, vocab = _describe(name, x)
    classes = int(max(y.max(), np.asarray(test[1]).max(initial=0)) + 1)
    return Task(name, _tensors(x[train_idx], y[train_idx], kind), _tensors(x[val_idx], y[val_idx], kind),
                _tensors(test[0], np.asarray(test[1]).astype(np.int64), kind), kind, shape, classes,
                vocab)


def _describe(name: str, x: np.ndarray) -> tuple[str, list[int], int | None]:
    if np.issubdtype(x.dtype, np.integer) and x.ndim == 2:
        return "sequence", [int(x.shape[1])], int(x.max()) + 1
    if np.issubdtype(x.dtype, np.floating) and x.ndim == 4:
        return "image", [int(s) for s in x.shape[1:]], None
    raise TaskError(f"{name}: inputs of shape {list(x.shape)} and dtype {x.dtype} are neither "
                    "images (float, N×C×H×W or N×H×W) nor token sequences (integers, N×L)")


def _tensors(x: np.ndarray, y: np.ndarray, kind: str) -> Split:
    dtype = torch.long if kind == "sequence" else torch.float32
    return torch.as_tensor(np.ascontiguousarray(x)).to(dtype), torch.as_tensor(y, dtype=torch.long)


def as_images(x: np.ndarray, scale: float | None = None) -> np.ndarray:
    """N×H×W or N×C×H×W arrays as float32 N×C×H×W, divided by `scale` (default: the maximum)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    peak = float(scale if scale is not None else max(1.0, float(np.abs(x).max(initial=1.0))))
    return x / peak
