"""A task: three splits of (inputs, labels) tensors and what a model needs to know of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor]
Arrays = tuple[np.ndarray, np.ndarray]

#: values of `task.normalize` (`space/_schema.py` TaskSpec lists the same, torch-free)
NORMALIZE = ("none", "max", "standardize")
#: `task.dataset` of an architecture trained on a Task passed in memory
IN_MEMORY = "<in-memory>"


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


@dataclass(frozen=True)
class Splits:
    """A task's splits as numpy arrays: the form the per-process caches hold, read-only."""

    name: str
    train: Arrays
    val: Arrays
    test: Arrays
    input_kind: str
    input_shape: list[int]
    num_classes: int
    vocab_size: int | None = None

    @classmethod
    def of_task(cls, task: Task) -> Splits:
        """A Task's tensors copied to numpy arrays, so a cache never shares a caller's tensors."""
        def arrays(split: Split) -> Arrays:
            x, y = (t.detach().cpu().numpy().copy() for t in split)
            return x, y

        return cls(task.name, arrays(task.train), arrays(task.val), arrays(task.test),
                   task.input_kind, list(task.input_shape), task.num_classes, task.vocab_size)

    def frozen(self) -> Splits:
        """These splits with every array read-only, since every later load shares them."""
        for split in (self.train, self.val, self.test):
            for array in split:
                array.flags.writeable = False
        return self

    def task(self) -> Task:
        """A Task of fresh tensors (read-only arrays are copied, so a trial may change its own)."""
        dtype = torch.long if self.input_kind == "sequence" else torch.float32

        def split(arrays: Arrays) -> Split:
            return _tensor(arrays[0], dtype), _tensor(arrays[1], torch.long)

        return Task(self.name, split(self.train), split(self.val), split(self.test),
                    self.input_kind, list(self.input_shape), self.num_classes, self.vocab_size)


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of `array`: a copy of a read-only (cached) one, else sharing its memory."""
    if not array.flags.writeable:
        return torch.tensor(array, dtype=dtype)
    return torch.as_tensor(np.ascontiguousarray(array)).to(dtype)


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
              test: Arrays | None = None, val: Arrays | None = None,
              normalize: str = "none", peak: float | None = None) -> Task:
    """Split arrays into a Task by the spec's seed and fractions (see `split_arrays`)."""
    return split_arrays(name, x, y, spec, test=test, val=val, normalize=normalize,
                        peak=peak).task()


def split_arrays(name: str, x: np.ndarray, y: np.ndarray, spec: dict[str, Any],
                 test: Arrays | None = None, val: Arrays | None = None,
                 normalize: str = "none", peak: float | None = None) -> Splits:
    """Splits of `x`, `y` by the spec's seed and fractions, normalised by `spec["normalize"]`.

    A split given (`val`, `test`: a data set's own) is used as is; a missing one is carved from
    `x`. `train_limit` caps the training split after splitting. `normalize` is the source's
    default, `peak` the largest value its format holds (what `max` divides by; else the
    training split's largest absolute value). Token sequences are never normalised.
    """
    kind = _kind(name, x)
    train, val, test = _carve(name, x, y, spec, val, test)
    train, val, test = (_prepared(split, kind) for split in (train, val, test))
    _check_shapes(name, train, val, test)
    if kind == "image":
        how = spec.get("normalize") or normalize
        scale = _normalizer(how, train[0], peak)
        train, val, test = ((scale(s[0]), s[1]) for s in (train, val, test))
    shape = [int(s) for s in train[0].shape[1:]]
    labels = np.concatenate([train[1], val[1], test[1]])
    vocab = (int(max(s[0].max(initial=0) for s in (train, val, test))) + 1
             if kind == "sequence" else None)
    return Splits(name, train, val, test, kind, shape, int(labels.max(initial=0)) + 1, vocab)


def _carve(name: str, x: np.ndarray, y: np.ndarray, spec: dict[str, Any],
           val: Arrays | None, test: Arrays | None) -> tuple[Arrays, Arrays, Arrays]:
    """(train, val, test) raw arrays: given splits copied, missing ones carved from `x`.

    Fractions stay fractions of the whole data set (given splits included). The order of the
    seeded draws (test, validation, train_limit) is what every earlier split was made with.
    """
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    y = np.asarray(y).astype(np.int64)
    whole = len(y) + sum(len(s[1]) for s in (val, test) if s is not None)
    if test is None:
        fraction = float(spec.get("test_fraction", 0.2))
        if val is not None:
            fraction = min(0.95, fraction * whole / max(1, len(y)))
        rest, test_idx = stratified_split(y, fraction, rng)
        test = (x[test_idx], y[test_idx])
        x, y = x[rest], y[rest]
    else:
        test = _copied(test)
    if val is None:
        val_fraction = float(spec.get("val_fraction", 0.2))
        train_idx, val_idx = stratified_split(
            y, min(0.95, val_fraction * whole / max(1, len(y))), rng)
        val = (x[val_idx], y[val_idx])
    else:
        train_idx, val = np.arange(len(y)), _copied(val)
    limit = spec.get("train_limit")
    if limit:
        train_idx = np.sort(rng.permutation(train_idx)[: int(limit)])
    if train_idx.size == 0 or len(val[1]) == 0:
        raise TaskError(f"{name}: too few samples ({whole}) for a train and a validation split; "
                        "lower val_fraction or give more data")
    return (x[train_idx], y[train_idx]), val, test


def _copied(split: Arrays) -> Arrays:
    """A given split copied, so that neither normalising nor a cache touches the caller's."""
    return np.array(split[0], copy=True), np.asarray(split[1]).astype(np.int64)


def _kind(name: str, x: np.ndarray) -> str:
    """"sequence" for integer N×L inputs, "image" for N×H×W or N×C×H×W ones."""
    if np.issubdtype(x.dtype, np.integer) and x.ndim == 2:
        return "sequence"
    if x.ndim in (3, 4) and np.issubdtype(x.dtype, np.number):
        return "image"
    raise TaskError(f"{name}: inputs of shape {list(x.shape)} and dtype {x.dtype} are neither "
                    "images (N×C×H×W or N×H×W) nor token sequences (integers, N×L)")


def _prepared(split: Arrays, kind: str) -> Arrays:
    """Inputs as the model reads them: int64 tokens, or float32 N×C×H×W images."""
    x = np.asarray(split[0])
    return (x.astype(np.int64, copy=False) if kind == "sequence" else as_images(x)), split[1]


def _check_shapes(name: str, *splits: Arrays) -> None:
    """A given split whose samples differ in shape from the training ones is the user's error."""
    shapes = {tuple(s[0].shape[1:]) for s in splits}
    if len(shapes) > 1:
        raise TaskError(f"{name}: the splits' samples differ in shape: "
                        f"{', '.join(str(list(s)) for s in sorted(shapes))}")


def _normalizer(how: str, train_x: np.ndarray, peak: float | None
                ) -> Callable[[np.ndarray], np.ndarray]:
    """The function `task.normalize` applies to every split, fitted on the training inputs."""
    if how == "none":
        return lambda x: x
    if how == "max":
        top = peak if peak is not None else float(np.abs(train_x).max(initial=0.0)) or 1.0
        return lambda x: x / top
    if how == "standardize":
        axes = (0, 2, 3)  # per channel
        mean = train_x.mean(axis=axes, dtype=np.float64, keepdims=True)
        std = train_x.std(axis=axes, dtype=np.float64, keepdims=True)
        mean, std = mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)
        return lambda x: (x - mean) / std
    raise TaskError(f"unknown normalize {how!r}; expected one of: {', '.join(NORMALIZE)}")


def as_images(x: np.ndarray) -> np.ndarray:
    """N×H×W or N×C×H×W arrays as float32 N×C×H×W, values unchanged (`task.normalize` scales)."""
    x = np.asarray(x).astype(np.float32, copy=False)
    return x[:, None] if x.ndim == 3 else x

