"""The input description of the built-in data sets, known before loading them (no torch)."""

from __future__ import annotations

from typing import Any

#: input description of the data sets whose shape is known before loading them
_IMAGE_IO = {"digits": ((1, 8, 8), 10), "fashion_mnist": ((1, 28, 28), 10)}


def known_io(task: dict[str, Any]) -> dict[str, Any] | None:
    """The `Task.info()` a data set will have, when it is known without loading it."""
    dataset = task.get("dataset")
    if dataset in _IMAGE_IO:
        shape, classes = _IMAGE_IO[dataset]
        return {"input_kind": "image", "input_shape": list(shape), "num_classes": classes,
                "vocab_size": None}
    if dataset == "parity":
        return {"input_kind": "sequence", "input_shape": [int(task.get("length", 16))],
                "num_classes": 2, "vocab_size": 3}
    return None
