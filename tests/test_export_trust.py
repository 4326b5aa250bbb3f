"""An export is data: every file loading reads is hashed in its manifest (metrics.json), a
changed file is refused by name before anything it names is imported, code it names (a task
factory, a backbone by import path) runs only with trust_code=True, and sizes the architecture
states are checked against the weights' header before the model is allocated."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

import condsearch as cs
from condsearch.export import ExportError, evaluate_exported, export_point, load_exported
from condsearch.export._files import sha256
from condsearch.space import unregister_backbone

SPACE = """\
name: trust_digits
task: {dataset: digits, train_limit: 200}
model:
  backbone: token_transformer
  dim: 16
  depth: 1
  heads: {choice: [2, 4]}
  patch_size: 4
objectives: [accuracy, flops]
train: {epochs: 1, batch_size: 64, lr: 5.0e-3, eval_batch_size: 256}
sampler: random
search: {trials: 2, seed: 0}
"""

# A user's backbone by import path: the built-in transformer under another name, so the
# weights of the search above fit it. Importing it leaves a marker next to it.
USER_NETS = '''
from pathlib import Path
Path(__file__).with_suffix(".imported").write_text("imported")

def build(model, io):
    from condsearch.models import build_model
    return build_model({"model": {**model, "backbone": "token_transformer"}}, io)
'''

EVIL = '''
from pathlib import Path
Path(__file__).with_suffix(".imported").write_text("imported")

def boom(**kwargs):
    raise SystemExit("evil_mod ran")
'''


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export of a two-trial digits search."""
    tmp = tmp_path_factory.mktemp("trust")
    (tmp / "space.yaml").write_text(SPACE)
    summary = cs.search(str(tmp / "space.yaml"), workdir=tmp / "run", progress=False)
    assert summary.completed == 2
    return export_point(tmp / "run", tmp / "clean", pick="max-accuracy")


@pytest.fixture
def export(clean: Path, tmp_path: Path) -> Path:
    """A copy of the clean export, for a test to edit."""
    return Path(shutil.copytree(clean, tmp_path / "export"))


@pytest.fixture
def code_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "evil_mod.py").write_text(EVIL)
    (folder / "trust_nets.py").write_text(USER_NETS)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in ("evil_mod", "trust_nets"):
        sys.modules.pop(name, None)


def edit_arch(export: Path, change, rehash: bool = False) -> None:
    """Edit architecture.yaml; with `rehash` also rewrite the manifest, as a forger would."""
    arch = yaml.safe_load((export / "architecture.yaml").read_text())
    change(arch)
    (export / "architecture.yaml").write_text(yaml.safe_dump(arch, sort_keys=False))
    if rehash:
        metrics = json.loads((export / "metrics.json").read_text())
        metrics["files"]["architecture.yaml"] = sha256(export / "architecture.yaml")
        (export / "metrics.json").write_text(json.dumps(metrics))


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(ExportError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_manifest_hashes_every_file_loading_reads(clean: Path):
    metrics = json.loads((clean / "metrics.json").read_text())
    assert metrics["files"] == {name: sha256(clean / name)
                                for name in ("architecture.yaml", "weights.safetensors")}
    assert metrics["weights_sha256"] == metrics["files"]["weights.safetensors"]


def test_a_clean_export_reproduces_its_metrics_trusted_or_not(clean: Path):
    recorded = json.loads((clean / "metrics.json").read_text())["metrics"]
    for trust in (False, True):
        again = evaluate_exported(clean, "val", trust_code=trust)
        assert again["accuracy"] == recorded["accuracy"]
        assert again["flops"] == pytest.approx(recorded["flops"], rel=1e-12)
    assert not load_exported(clean).training


def test_an_edited_architecture_is_refused_naming_the_file(export: Path):
    edit_arch(export, lambda arch: arch["model"].update(dim=32))
    for call in (load_exported, evaluate_exported):
        message = refused(call, export)
        assert message.startswith(f"{export / 'architecture.yaml'}: sha256 ")
        assert "changed or corrupted" in message


def test_an_edited_hash_refuses_the_file_it_names(export: Path):
    metrics = json.loads((export / "metrics.json").read_text())
    metrics["files"]["weights.safetensors"] = "0" * 64
    (export / "metrics.json").write_text(json.dumps(metrics))
    assert refused(load_exported, export).startswith(f"{export / 'weights.safetensors'}: ")


def test_a_task_factory_in_an_edited_export_is_never_imported(export: Path, code_folder: Path):
    marker = code_folder / "evil_mod.imported"
    edit_arch(export, lambda arch: arch.update(task={"dataset": "evil_mod:boom"}))
    for trust in (False, True):  # the hash refuses it first, trusted or not
        message = refused(evaluate_exported, export, "val", trust_code=trust)
        assert message.startswith(f"{export / 'architecture.yaml'}: sha256 ")
    # A forger who rewrites the manifest too: the factory is code, refused unless trusted.
    edit_arch(export, lambda arch: None, rehash=True)
    message = refused(evaluate_exported, export, "val")
    assert "'evil_mod:boom'" in message and "trust_code=True" in message
    assert str(export / "architecture.yaml") in message
    assert not marker.exists() and "evil_mod" not in sys.modules
    load_exported(export)  # loading the model reads no task: nothing to trust
    assert not marker.exists()


@pytest.mark.parametrize("where", ["backbone", "factory"])
def test_a_backbone_import_path_needs_trust_code(export: Path, code_folder: Path, where: str):
    marker = code_folder / "trust_nets.imported"

    def rename(arch):
        if where == "backbone":
            arch["model"]["backbone"] = "trust_nets:build"
        else:  # a name unknown here, with the factory an export records
            arch["model"]["backbone"] = "their_transformer"
            arch["factory"] = "trust_nets:build"

    edit_arch(export, rename, rehash=True)
    for call in (load_exported, evaluate_exported):
        message = refused(call, export)
        assert "the backbone factory 'trust_nets:build'" in message
        assert "trust_code=True" in message
    assert not marker.exists()
    recorded = json.loads((export / "metrics.json").read_text())["metrics"]
    again = evaluate_exported(export, "val", trust_code=True)
    assert marker.exists()
    assert again["accuracy"] == recorded["accuracy"]


def test_a_backbone_registered_by_name_needs_no_trust(export: Path, code_folder: Path):
    import trust_nets

    edit_arch(export, lambda arch: arch["model"].update(backbone="trust_registered"),
              rehash=True)
    cs.register_backbone("trust_registered", trust_nets.build)
    try:
        assert not load_exported(export).training
    finally:
        unregister_backbone("trust_registered")


def test_sizes_that_do_not_fit_the_weights_are_refused_before_allocation(
        export: Path, monkeypatch: pytest.MonkeyPatch):
    import condsearch.models

    real = condsearch.models.build_model
    devices = []

    def only_on_meta(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        assert devices[-1] == "meta", "a model was built for real before its sizes were checked"
        return real(*args, **kwargs)

    monkeypatch.setattr(condsearch.models, "build_model", only_on_meta)
    edit_arch(export, lambda arch: arch["model"].update(dim=20000), rehash=True)
    message = refused(load_exported, export)
    assert message.startswith(f"{export / 'architecture.yaml'} does not fit "
                              "weights.safetensors: tensor ")
    assert "20000" in message and "in the architecture" in message
    assert devices == ["meta"]
