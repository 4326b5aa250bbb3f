"""Data sets decoded once per process: every trial gets equal data, and none can change it."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from condsearch.data import load_task
from condsearch.data._builtin import digits_arrays
from condsearch.data._idx import read_idx

DIGITS = {"dataset": "digits", "seed": 0, "train_limit": 200}


def test_digits_are_parsed_once_and_every_load_is_equal():
    first, again = load_task(DIGITS), load_task(DIGITS)
    assert digits_arrays() is digits_arrays()
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(first, split), getattr(again, split), strict=True):
            assert torch.equal(a, b)


def test_the_cached_digits_cannot_be_changed_through_a_task_or_directly():
    images, labels = digits_arrays()
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0, 0, 0] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        labels[0] = 3
    task = load_task(DIGITS)
    task.train[0].fill_(7.0)  # a trial may do what it likes with its own tensors
    task.train[1].fill_(0)
    assert torch.equal(load_task(DIGITS).val[0], load_task(DIGITS).val[0])
    assert float(load_task(DIGITS).train[0].max()) <= 1.0
    assert images.max() <= 1.0 and len(np.unique(labels)) == 10


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_an_idx_file_is_decoded_once_read_only_and_again_when_it_changes(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    write_idx(path, np.arange(24).reshape(2, 3, 4))
    first = read_idx(path)
    assert read_idx(path) is first
    assert first.tolist() == np.arange(24).reshape(2, 3, 4).tolist()
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0, 0] = 1
    write_idx(path, np.ones((2, 3, 4)))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert read_idx(path).tolist() == np.ones((2, 3, 4)).tolist()


def test_digits_read_without_scikit_learn_equal_its_load_digits():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    images, labels = digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images[:, 0], (bunch.images / 16.0).astype(np.float32))
    assert np.array_equal(labels, bunch.target)
    # importing scikit-learn (and scipy) cost the first trial of every search process 0.9 s
    probe = ("import sys; from condsearch.data import load_task; load_task('digits'); "
             "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
