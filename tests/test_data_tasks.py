"""Tasks: seeded splits of the offline data sets, and the user's own data."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from condsearch.data import Task, TaskError, load_task
from condsearch.data._builtin import parity_arrays
from condsearch.data._idx import FASHION_MNIST_DIR


def test_digits_splits_are_disjoint_stratified_and_cover_the_data_set():
    task = load_task({"dataset": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2})
    sizes = [len(task.train[1]), len(task.val[1]), len(task.test[1])]
    assert sum(sizes) == 1797
    assert sizes[1] == pytest.approx(0.2 * 1797, abs=10) and sizes[2] == pytest.approx(0.2 * 1797, abs=10)
    assert task.info() == {"input_kind": "image", "input_shape": [1, 8, 8], "num_classes": 10,
                           "vocab_size": None}
    assert task.train[0].dtype == torch.float32 and 0 <= task.train[0].min() <= task.train[0].max() <= 1
    for split in (task.val, task.test):
        counts = torch.bincount(split[1], minlength=10).float()
        assert counts.min() >= 0.8 * counts.mean()  # every class is represented about equally


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    a, b = (load_task({"dataset": "digits", "seed": 1}) for _ in range(2))
    c = load_task({"dataset": "digits", "seed": 2})
    assert torch.equal(a.val[1], b.val[1]) and torch.equal(a.val[0], b.val[0])
    assert not torch.equal(a.val[0], c.val[0])


def test_train_limit_caps_only_the_training_split():
    full = load_task({"dataset": "digits"})
    small = load_task({"dataset": "digits", "train_limit": 100})
    assert len(small.train[1]) == 100
    assert torch.equal(small.val[0], full.val[0]) and torch.equal(small.test[0], full.test[0])


def test_parity_labels_count_the_plus_ones_mod_two():
    x, y = parity_arrays(500, 10, seed=3)
    values = x - 1  # token ids 0, 1, 2 are the entries -1, 0, +1
    assert set(np.unique(values)) == {-1, 0, 1}
    assert np.array_equal(y, (values == 1).sum(1) % 2)
    task = load_task({"dataset": "parity", "length": 10, "size": 600})
    assert task.info() == {"input_kind": "sequence", "input_shape": [10], "num_classes": 2,
                           "vocab_size": 3}
    assert task.train[0].dtype == torch.long
    assert sum(len(s[1]) for s in (task.train, task.val, task.test)) == 600


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed "
                           "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_reads_the_full_idx_set_and_keeps_its_own_test_split():
    task = load_task({"dataset": "fashion_mnist", "val_fraction": 0.1})
    assert len(task.test[1]) == 10_000
    assert len(task.train[1]) + len(task.val[1]) == 60_000
    assert len(task.val[1]) == pytest.approx(7000, abs=10)  # a tenth of all 70k, taken from train
    assert task.info()["input_shape"] == [1, 28, 28]
    assert torch.bincount(task.test[1]).tolist() == [1000] * 10


def test_a_missing_fashion_mnist_directory_says_how_to_install_it(tmp_path):
    with pytest.raises(TaskError, match="apt-get install dataset-fashion-mnist"):
        load_task({"dataset": "fashion_mnist", "path": str(tmp_path)})


def test_an_npz_file_of_images_or_token_sequences_becomes_a_task(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "images.npz"
    np.savez(images, x_train=rng.integers(0, 255, (200, 6, 6)).astype(np.uint8),
             y_train=rng.integers(0, 3, 200), x_test=rng.integers(0, 255, (40, 6, 6)).astype(np.uint8),
             y_test=rng.integers(0, 3, 40))
    task = load_task({"dataset": "npz", "path": str(images)})
    assert task.info() == {"input_kind": "image", "input_shape": [1, 6, 6], "num_classes": 3,
                           "vocab_size": None}
    assert len(task.test[1]) == 40
    sequences = tmp_path / "seq.npz"
    np.savez(sequences, x=rng.integers(0, 7, (100, 5)), y=rng.integers(0, 2, 100))
    assert load_task({"dataset": "npz", "path": str(sequences)}).info()["vocab_size"] == 7
    with pytest.raises(TaskError, match="x_train, y_train"):
        np.savez(tmp_path / "bad.npz", inputs=np.zeros(3))
        load_task({"dataset": "npz", "path": str(tmp_path / "bad.npz")})


def test_a_module_function_factory_gets_its_kwargs(tmp_path, monkeypatch):
    (tmp_path / "my_data.py").write_text(
        "import numpy as np\n"
        "def make(n):\n"
        "    rng = np.random.default_rng(0)\n"
        "    return {'x': rng.random((n, 4, 4)).astype('float32'), 'y': rng.integers(0, 2, n)}\n"
        "def wrong():\n"
        "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task({"dataset": "my_data:make", "kwargs": {"n": 50}})
    assert isinstance(task, Task)
    assert sum(len(s[1]) for s in (task.train, task.val, task.test)) == 50
    with pytest.raises(TaskError, match="returns a condsearch Task or a mapping"):
        load_task({"dataset": "my_data:wrong"})
    with pytest.raises(TaskError, match="cannot import"):
        load_task({"dataset": "no_such_module_here:make"})
    sys.modules.pop("my_data", None)
