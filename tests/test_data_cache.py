"""Data sets decoded once per process: every trial gets equal data, and none can change it."""

import gzip
import os
import sys
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
    assert images.max() == 16.0 and len(np.unique(labels)) == 10  # raw pixels; tasks scale


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
    assert np.array_equal(images[:, 0], bunch.images.astype(np.float32))
    assert np.array_equal(labels, bunch.target)
    # importing scikit-learn (and scipy) cost the first trial of every search process 0.9 s
    probe = ("import sys; from condsearch.data import load_task; load_task('digits'); "
             "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- the user's data: an .npz file and a factory, cached per process like the built-ins ----------


@pytest.fixture
def fresh_cache():
    from condsearch.data._cache import clear_cache

    clear_cache()
    yield
    clear_cache()


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_an_npz_file_is_read_once_and_again_when_it_changes(tmp_path, monkeypatch, fresh_cache):
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((60, 4, 4)).astype(np.float32), y=rng.integers(0, 2, 60))
    reads = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: reads.append(a) or real_load(*a, **k))
    spec = {"dataset": "npz", "path": str(path)}
    first, again = load_task(spec), load_task(spec)
    assert len(reads) == 1
    assert torch.equal(first.train[0], again.train[0]) and torch.equal(first.val[1], again.val[1])
    first.train[0].fill_(9.0)  # a trial's tensors are its own; the cached arrays are read-only
    assert not torch.equal(load_task(spec).train[0], first.train[0])
    load_task({**spec, "seed": 1})  # another spec: another split, from the file again
    assert len(reads) == 2
    np.savez(path, x=np.ones((60, 4, 4), dtype=np.float32), y=rng.integers(0, 2, 60))
    bump_mtime(path)
    assert float(load_task(spec).train[0].min()) == 1.0
    assert len(reads) == 3


def test_a_factory_is_called_once_per_function_and_spec(tmp_path, monkeypatch, fresh_cache):
    module = "counted_factory_data"
    (tmp_path / f"{module}.py").write_text(
        "import numpy as np\n"
        "CALLS = []\n"
        "def make(n):\n"
        "    CALLS.append(n)\n"
        "    rng = np.random.default_rng(n)\n"
        "    return {'x': rng.random((n, 4, 4)).astype('float32'), 'y': rng.integers(0, 2, n)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"dataset": f"{module}:make", "kwargs": {"n": 50}}
    first, again = load_task(spec), load_task(spec)
    calls = sys.modules[module].CALLS
    assert calls == [50]
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(first, split), getattr(again, split), strict=True):
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    load_task({**spec, "kwargs": {"n": 60}})
    assert calls == [50, 60]
    load_task(spec)
    assert calls == [50, 60]
    sys.modules.pop(module, None)
