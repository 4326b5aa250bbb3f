"""Fashion-MNIST from the four standard IDX files (Debian's `dataset-fashion-mnist` installs them)."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

import numpy as np

from condsearch.data._task import Task, TaskError, make_task

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: the largest value of an unsigned-byte pixel
PIXEL_PEAK = 255.0
_FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (gzipped or not): magic 0x0000 | dtype 0x08 (ubyte) | ndim, then big-endian dims.

    Read-only, and decoded once per process while the file is unchanged: decompressing the
    training images took about 0.5 s, which every trial of a search would pay again.
    """
    stat = path.stat()
    return _read_idx(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx(path: Path, mtime_ns: int, size: int) -> np.ndarray:
    # mtime and size are part of the cache key only, so a rewritten file is read again.
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise TaskError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise TaskError(f"{path}: holds {body.size} values, its header says {dims}")
    array = body.reshape(dims)
    array.flags.writeable = False  # np.frombuffer over bytes is read-only already; say so
    return array


def _find(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist(spec: dict[str, Any]) -> Task:
    """The full 60k / 10k set; validation is carved from the 60k, the 10k is the test split.

    `max` (the default) divides the pixels by 255, so the values lie in [0, 1].
    """
    directory = Path(spec.get("path") or FASHION_MNIST_DIR)
    found = {key: _find(directory, stem) for key, stem in _FILES.items()}
    missing = [_FILES[k] for k, p in found.items() if p is None]
    if missing:
        raise TaskError(
            f"fashion_mnist: {directory} lacks {', '.join(f + '[.gz]' for f in missing)}. "
            "Install the data set with `sudo apt-get install dataset-fashion-mnist` "
            f"(it puts the IDX files in {FASHION_MNIST_DIR}), or point task.path at a "
            "directory holding the four IDX files.")
    arrays = {key: read_idx(path) for key, path in found.items()}  # type: ignore[arg-type]
    return make_task("fashion_mnist", arrays["x_train"], arrays["y_train"], spec,
                     test=(arrays["x_test"], arrays["y_test"]), normalize="max", peak=PIXEL_PEAK)
