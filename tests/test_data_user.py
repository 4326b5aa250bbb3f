"""The user's data as documented: its own validation and test splits, explicit normalisation, and
a factory found next to the search-space file."""

import hashlib
import sys
import typing
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from condsearch.data import Task, TaskError, load_task
from condsearch.data._cache import clear_cache
from condsearch.data._idx import FASHION_MNIST_DIR
from condsearch.data._task import NORMALIZE
from condsearch.space import SpaceError, load_space, parse_space
from condsearch.space._schema import TaskSpec

HAS_FASHION = Path(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz").exists()


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test reads its own files and factories, not what an earlier test left cached."""
    clear_cache()
    yield
    clear_cache()


def images(n: int, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(3.0, 2.0, (n, channels, 6, 6))
            * np.arange(1, channels + 1)[None, :, None, None]).astype(np.float32)


def labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, n)


def npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / f"{uuid.uuid4().hex}.npz"
    np.savez(path, **arrays)
    return str(path)


def sizes(task: Task) -> list[int]:
    return [len(task.train[1]), len(task.val[1]), len(task.test[1])]


# ---- 1. splits as given --------------------------------------------------------------------------


def test_an_npz_validation_split_is_used_as_given_and_test_is_carved_from_train(tmp_path):
    x_train, y_train, x_val, y_val = images(120, 0), labels(120, 0), images(30, 1), labels(30, 1)
    task = load_task({"dataset": "npz", "path": npz(tmp_path, x_train=x_train, y_train=y_train,
                                                    x_val=x_val, y_val=y_val)})
    assert len(task.val[1]) == 30
    assert len(task.train[1]) + len(task.test[1]) == 120
    assert len(task.test[1]) == pytest.approx(0.2 * 150, abs=3)  # a fifth of all the data
    assert torch.equal(task.val[0], torch.from_numpy(x_val))
    assert torch.equal(task.val[1], torch.from_numpy(y_val))


def test_given_validation_and_test_splits_are_exactly_those_given(tmp_path):
    arrays = {"x_train": images(100, 0), "y_train": labels(100, 0), "x_val": images(17, 1),
              "y_val": labels(17, 1), "x_test": images(23, 2), "y_test": labels(23, 2)}
    path = npz(tmp_path, **arrays)
    task = load_task({"dataset": "npz", "path": path})
    assert sizes(task) == [100, 17, 23]
    for split in ("train", "val", "test"):
        x, y = getattr(task, split)
        assert torch.equal(x, torch.from_numpy(arrays[f"x_{split}"]))
        assert torch.equal(y, torch.from_numpy(arrays[f"y_{split}"]))
    limited = load_task({"dataset": "npz", "path": path, "train_limit": 40})
    assert sizes(limited) == [40, 17, 23]  # train_limit caps the training split only
    assert torch.equal(limited.val[0], task.val[0]) and torch.equal(limited.test[0], task.test[0])


def test_a_given_test_split_leaves_validation_carved_as_before(tmp_path):
    path = npz(tmp_path, x_train=images(160, 0), y_train=labels(160, 0), x_test=images(40, 1),
               y_test=labels(40, 1))
    task = load_task({"dataset": "npz", "path": path, "val_fraction": 0.2})
    assert len(task.test[1]) == 40 and len(task.train[1]) + len(task.val[1]) == 160
    assert len(task.val[1]) == pytest.approx(40, abs=3)  # a fifth of all 200, taken from train


def test_a_factory_mapping_with_a_validation_split_keeps_it(tmp_path, monkeypatch):
    module = f"val_factory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "import numpy as np\n"
        "def make():\n"
        "    rng = np.random.default_rng(0)\n"
        "    return {'x_train': rng.random((80, 5, 5)).astype('float32'),\n"
        "            'y_train': rng.integers(0, 2, 80),\n"
        "            'x_val': rng.random((11, 5, 5)).astype('float32'),\n"
        "            'y_val': rng.integers(0, 2, 11)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task({"dataset": f"{module}:make"})
    assert len(task.val[1]) == 11 and len(task.train[1]) + len(task.test[1]) == 80
    assert task.input_shape == [1, 5, 5]
    sys.modules.pop(module, None)


def test_half_a_split_pair_or_splits_of_other_shapes_are_errors(tmp_path):
    half = npz(tmp_path, x_train=images(50, 0), y_train=labels(50, 0), x_val=images(5, 1))
    with pytest.raises(TaskError, match="x_val is given without its pair"):
        load_task({"dataset": "npz", "path": half})
    other = npz(tmp_path, x_train=images(50, 0), y_train=labels(50, 0),
                x_val=images(5, 1, channels=2), y_val=labels(5, 1))
    with pytest.raises(TaskError, match="differ in shape"):
        load_task({"dataset": "npz", "path": other})


# ---- 2. explicit normalisation -------------------------------------------------------------------


def standardised(n: int, seed: int) -> np.ndarray:
    x = images(n, seed, channels=3)
    return ((x - x.mean(axis=(0, 2, 3), keepdims=True)) / x.std(axis=(0, 2, 3), keepdims=True)
            ).astype(np.float32)


def given_splits(tmp_path: Path, x_train: np.ndarray, inputs=standardised) -> str:
    """An npz with its own validation and test splits (20 each, of `inputs(n, seed)`)."""
    return npz(tmp_path, x_train=x_train, y_train=labels(len(x_train), 0),
               x_val=inputs(20, 1), y_val=labels(20, 1),
               x_test=inputs(20, 2), y_test=labels(20, 2))


def test_standardised_inputs_reach_the_model_unchanged_by_default_and_under_none(tmp_path):
    x = standardised(90, 0)
    path = given_splits(tmp_path, x)
    for spec in ({}, {"normalize": "none"}):
        task = load_task({"dataset": "npz", "path": path, **spec})
        assert task.train[0].dtype == torch.float32
        assert torch.equal(task.train[0], torch.from_numpy(x))
        assert torch.equal(task.val[0], torch.from_numpy(np.load(path)["x_val"]))


def test_max_divides_every_split_by_the_training_splits_largest_absolute_value(tmp_path):
    x = images(90, 0)
    path = given_splits(tmp_path, x, inputs=images)
    task = load_task({"dataset": "npz", "path": path, "normalize": "max"})
    peak = float(np.abs(x).max())
    assert float(task.train[0].abs().max()) == 1.0
    assert torch.equal(task.train[0], torch.from_numpy(x / peak))
    assert torch.equal(task.val[0], torch.from_numpy(np.load(path)["x_val"] / peak))


def test_standardize_uses_the_training_splits_mean_and_std_per_channel(tmp_path):
    x = images(90, 0, channels=3)
    path = given_splits(tmp_path, x, inputs=lambda n, seed: images(n, seed, channels=3))
    task = load_task({"dataset": "npz", "path": path, "normalize": "standardize"})
    train = task.train[0].double()
    assert torch.allclose(train.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.double), atol=1e-5)
    ones = torch.ones(3, dtype=torch.double)
    assert torch.allclose(train.std(dim=(0, 2, 3), unbiased=False), ones, atol=1e-5)
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64, keepdims=True)
    std = x.std(axis=(0, 2, 3), dtype=np.float64, keepdims=True)
    expected_val = (np.load(path)["x_val"] - mean) / std  # the training statistics, not val's own
    assert np.allclose(task.val[0].numpy(), expected_val, atol=1e-5)


def test_token_sequences_are_never_normalised(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 9, (80, 6))
    path = npz(tmp_path, x=x, y=rng.integers(0, 2, 80))
    for how in NORMALIZE:
        task = load_task({"dataset": "npz", "path": path, "normalize": how})
        assert task.train[0].dtype == torch.long
        assert set(task.train[0].unique().tolist()) <= set(range(9))
    parity = load_task({"dataset": "parity", "size": 300, "length": 8})
    assert torch.equal(load_task({"dataset": "parity", "size": 300, "length": 8,
                                  "normalize": "standardize"}).train[0], parity.train[0])


def fingerprint(task: Task) -> str:
    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        for tensor in getattr(task, split):
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


# Fingerprints of the splits the loaders made before `normalize` existed (values and order).
BEFORE = [({"dataset": "digits"}, "2fc252747864ebe7"),
          ({"dataset": "digits", "seed": 3, "train_limit": 200, "val_fraction": 0.1},
           "01bb5b92c595df72"),
          ({"dataset": "parity", "size": 600, "length": 10}, "94817fcf4e33ac2d")]


@pytest.mark.parametrize(("spec", "expected"), BEFORE)
def test_the_built_in_sets_are_exactly_what_they_were(spec, expected):
    assert fingerprint(load_task(spec)) == expected
    assert fingerprint(load_task({**spec, "normalize": None})) == expected


@pytest.mark.skipif(not HAS_FASHION, reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_is_exactly_what_it_was():
    spec = {"dataset": "fashion_mnist", "seed": 1, "train_limit": 2000}
    assert fingerprint(load_task(spec)) == "c33c45cf609141a4"
    assert float(load_task({**spec, "normalize": "none"}).train[0].max()) == 255.0


def test_digits_max_is_the_default_and_none_gives_the_raw_pixels():
    default = load_task({"dataset": "digits", "train_limit": 300})
    assert torch.equal(load_task({"dataset": "digits", "train_limit": 300, "normalize": "max"}
                                 ).train[0], default.train[0])
    raw = load_task({"dataset": "digits", "train_limit": 300, "normalize": "none"})
    assert torch.equal(raw.train[0] / 16.0, default.train[0])
    standard = load_task({"dataset": "digits", "normalize": "standardize"})
    assert abs(float(standard.train[0].mean())) < 1e-5


def test_an_unknown_normalize_is_a_file_line_error_naming_the_three_values():
    text = ("name: demo\n"
            "task:\n"
            "  dataset: digits\n"
            "  normalize: standardise\n"
            "model: {backbone: token_transformer, dim: 16, depth: 1, heads: 2, patch_size: 4}\n")
    with pytest.raises(SpaceError) as info:
        parse_space(text, "demo.yaml")
    message = str(info.value)
    assert "demo.yaml:4: task.normalize: unknown normalize 'standardise'" in message
    assert "none, max, standardize" in message
    assert parse_space(text.replace("standardise", "standardize"), "demo.yaml"
                       ).task["normalize"] == "standardize"


def test_the_schema_and_the_loader_know_the_same_normalize_values():
    (literal, _none) = typing.get_args(TaskSpec.model_fields["normalize"].annotation)
    assert typing.get_args(literal) == NORMALIZE


# ---- 3. a factory next to the YAML ---------------------------------------------------------------


def test_a_factory_beside_the_space_file_is_found_in_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_object may add the folder
    module = f"beside_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{module}.py").write_text(
        "import numpy as np\n"
        "def make(n):\n"
        "    rng = np.random.default_rng(0)\n"
        "    return {'x': rng.random((n, 4, 4)).astype('float32'), 'y': rng.integers(0, 2, n)}\n")
    (folder / "space.yaml").write_text(
        "name: beside\n"
        f"task: {{dataset: '{module}:make', kwargs: {{n: 60}}}}\n"
        "model: {backbone: token_transformer, dim: 16, depth: 1, heads: 2, patch_size: 2}\n")
    space = load_space(str(folder / "space.yaml"))
    with pytest.raises(TaskError, match="cannot import"):
        load_task(space.task)  # not on sys.path, and no folder to look in
    task = load_task(space.task, near=space.folder)
    assert sum(sizes(task)) == 60 and task.input_shape == [1, 4, 4]
    sys.modules.pop(module, None)
