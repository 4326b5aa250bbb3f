"""A user's own network, searched as the built-ins are: named in the YAML by import path or
registered by name (in process, or by an installed package's entry point), with its own keys,
hosting condsearch's early exit; validate, search, pareto, export, and an export that
re-evaluates to exactly what the search recorded. All from a folder outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import condsearch as cs
from condsearch.space import parse_space, unregister_backbone

CLI = [sys.executable, "-m", "condsearch"]

USER_MODULE = '''
"""A user's small CNN with condsearch's early exit after its first stage."""
from torch import nn

import condsearch as cs
from condsearch.space import parse_space, unregister_backbone
from condsearch.blocks import EarlyExit

PARAMS = {"width": cs.Param("int", 8, lo=1, doc="conv channels")}


@cs.declare_backbone(params=PARAMS, hosts=("early_exit",))
def build(model, io):
    channels = io["input_shape"][0]
    width = model["width"]
    stages = [nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()),
              nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())]

    def head(position):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, io["num_classes"]))

    early = model["components"]["early_exit"]
    if early["enabled"]:
        return EarlyExit(stages, head, [1], criterion=early["criterion"],
                         threshold=early["threshold"], loss_weight=early["loss_weight"])
    return nn.Sequential(*stages, head(2))
'''

SPACE = """\
name: {name}
task: {{dataset: digits, train_limit: 300}}
model:
  backbone: "{backbone}"
  width: {{choice: [8, 16]}}
  components:
    early_exit:
      enabled: {{choice: [true, false]}}
      threshold: 0.8
objectives: [accuracy, flops]
train: {{epochs: 1, batch_size: 64, lr: 3.0e-3}}
sweep: {{early_exit.threshold: [0.5, 0.95]}}
search: {{trials: 3, seed: 0}}
"""


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user")
    (folder / "mynets.py").write_text(USER_MODULE)
    return folder


def recorded_and_reevaluated(folder: Path, export: Path, env: dict[str, str],
                             trust_code: bool = False) -> tuple[dict, dict]:
    code = ("import json, sys, condsearch as cs\n"
            f"print(json.dumps(cs.evaluate_exported({str(export)!r}, split='val', "
            f"trust_code={trust_code})))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout.strip().splitlines()[-1])
    recorded = json.loads((export / "metrics.json").read_text())["metrics"]
    return recorded, again


@pytest.mark.slow
def test_a_backbone_named_by_import_path_runs_the_whole_cli_and_its_export_reproduces(
        user_folder: Path):
    (user_folder / "space.yaml").write_text(SPACE.format(name="user_cnn", backbone="mynets:build"))
    checked = run(["validate", "space.yaml"], user_folder)
    assert checked.returncode == 0, checked.stderr
    assert "is code; it was not imported" in checked.stderr
    trusted = run(["validate", "space.yaml", "--trust-code"], user_folder)
    assert trusted.returncode == 0 and "not imported" not in trusted.stderr, trusted.stderr

    searched = run(["search", "space.yaml", "--workdir", "w", "--quiet"], user_folder)
    assert searched.returncode == 0, searched.stderr
    front = json.loads(run(["pareto", "--workdir", "w", "--json"], user_folder).stdout)
    assert front and all(p["values"]["accuracy"] > 0 for p in front)
    exported = run(["export", "--workdir", "w", "--pick", "knee", "--out", "exp"], user_folder)
    assert exported.returncode == 0, exported.stderr
    arch = (user_folder / "exp" / "architecture.yaml").read_text()
    assert "backbone: mynets:build" in arch and "factory: mynets:build" in arch

    recorded, again = recorded_and_reevaluated(user_folder, user_folder / "exp",
                                               {"PYTHONPATH": str(user_folder)},
                                               trust_code=True)
    assert again["accuracy"] == recorded["accuracy"]
    assert again["flops"] == recorded["flops"]


@pytest.mark.slow
def test_the_sweep_of_a_hosted_component_adds_derived_points(user_folder: Path):
    import optuna

    storage = f"sqlite:///{user_folder / 'w' / 'study.db'}"
    study = optuna.load_study(study_name="user_cnn", storage=storage)
    derived = [t for t in study.trials if "condsearch.derived_from" in t.user_attrs]
    trained_with_exits = [t for t in study.trials if t.params.get(
        "model.components.early_exit.enabled") and "condsearch.derived_from" not in t.user_attrs]
    assert len(derived) == 2 * len(trained_with_exits)


@pytest.mark.slow
def test_an_export_whose_factory_cannot_be_imported_says_what_to_do(user_folder: Path,
                                                                    tmp_path: Path):
    code = (f"import condsearch as cs\n"
            f"cs.load_exported({str(user_folder / 'exp')!r}, trust_code=True)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "ExportError" in last and "mynets:build" in last
    assert "install the package that provides it or put its folder on PYTHONPATH" in last


@pytest.mark.slow
def test_a_misspelt_declared_key_is_pointed_at_with_a_suggestion(user_folder: Path):
    text = SPACE.format(name="typo", backbone="mynets:build").replace("  width:", "  widht:")
    (user_folder / "typo.yaml").write_text(text)
    for args in (["validate", "typo.yaml", "--trust-code"],
                 ["search", "typo.yaml", "--workdir", "typo", "--quiet"]):
        done = run(args, user_folder)
        assert done.returncode == 2
        assert done.stderr.strip() == ("typo.yaml:5: model.widht: unknown key; "
                                       "did you mean 'width'?")
    assert not (user_folder / "typo").exists()


def test_an_undeclared_key_is_sampled_and_passed_as_written(user_folder: Path):
    text = SPACE.format(name="extra", backbone="mynets:build").replace(
        "  width:", "  dropout_rate: {float: [0.0, 0.5]}\n  width:")
    parsed = parse_space(text, str(user_folder / "extra.yaml"), trust_code=True)
    assert "model.dropout_rate" in parsed.distributions()
    assert "model.width" in parsed.distributions()


@pytest.mark.slow
def test_an_unimportable_factory_is_one_line_and_exit_2(user_folder: Path):
    (user_folder / "missing.yaml").write_text(SPACE.format(name="m", backbone="nosuchmod:build"))
    done = run(["search", "missing.yaml", "--workdir", "m", "--quiet"], user_folder)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("missing.yaml:4: model.backbone: cannot import nosuchmod:build: no "
                           "module named 'nosuchmod'")


@pytest.mark.slow
def test_a_backbone_registered_by_name_searches_exports_and_reproduces(user_folder: Path,
                                                                      tmp_path: Path):
    sys.path.insert(0, str(user_folder))
    try:
        import mynets

        cs.register_backbone("user_cnn_by_name", mynets.build, params=mynets.PARAMS,
                             hosts=("early_exit",))
        path = tmp_path / "space.yaml"
        path.write_text(SPACE.format(name="by_name", backbone="user_cnn_by_name"))
        summary = cs.search(str(path), workdir=tmp_path / "w", progress=False)
        assert summary.completed == 3 and summary.front
        out = cs.export_point(tmp_path / "w", tmp_path / "exp", pick="knee")
        model = cs.load_exported(out)
        assert type(model).__module__ in ("mynets", "condsearch.blocks.early_exit",
                                          "torch.nn.modules.container")
        evaluated = cs.evaluate_exported(out, split="val")
        recorded = json.loads((out / "metrics.json").read_text())["metrics"]
        assert evaluated["accuracy"] == recorded["accuracy"]
        assert evaluated["flops"] == recorded["flops"]
    finally:
        unregister_backbone("user_cnn_by_name")
        sys.path.remove(str(user_folder))


@pytest.mark.slow
def test_a_backbone_from_an_installed_packages_entry_point_works_from_the_cli(tmp_path: Path):
    site = tmp_path / "site"
    package = site / "usernets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(USER_MODULE)
    info = site / "usernets-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: usernets\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[condsearch.backbones]\nusernet = usernets.nets:build\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "space.yaml").write_text(SPACE.format(name="ep", backbone="usernet"))
    env = {"PYTHONPATH": str(site)}
    assert run(["validate", "space.yaml"], work, env).returncode == 0
    bad = (work / "space.yaml").read_text().replace("  width:", "  widht:")
    (work / "bad.yaml").write_text(bad)
    typo = run(["validate", "bad.yaml"], work, env)
    assert typo.returncode == 2 and "did you mean 'width'?" in typo.stderr
    searched = run(["search", "space.yaml", "--workdir", "w", "--quiet", "--trials", "2"],
                   work, env)
    assert searched.returncode == 0, searched.stderr
    assert run(["export", "--workdir", "w", "--pick", "max-accuracy", "--out", "exp"], work,
               env).returncode == 0
    recorded, again = recorded_and_reevaluated(work, work / "exp", env)
    assert (again["accuracy"], again["flops"]) == (recorded["accuracy"], recorded["flops"])


def test_declarations_refuse_what_they_cannot_honour():
    with pytest.raises(ValueError, match="built-in backbone"):
        cs.register_backbone("cigt", lambda model, io: None)
    with pytest.raises(ValueError, match="unknown components"):
        cs.register_backbone("x", lambda model, io: None, hosts=("early_exits",))
    with pytest.raises(TypeError, match="condsearch.Param"):
        cs.register_backbone("x", lambda model, io: None, params={"width": 8})



def test_a_typo_next_to_a_declared_key_is_caught_in_process_too(user_folder: Path):
    text = SPACE.format(name="typo", backbone="mynets:build").replace("  width:", "  widht:")
    with pytest.raises(cs.SpaceError) as caught:
        parse_space(text, str(user_folder / "typo.yaml"), trust_code=True)
    assert str(caught.value) == f"{user_folder / 'typo.yaml'}:5: model.widht: unknown key; did you mean 'width'?"
    untrusted = parse_space(text, str(user_folder / "typo.yaml"))
    assert untrusted.untrusted == ["mynets:build"]


def test_a_registered_backbone_brings_its_own_checks_and_depth():
    def stages_must_be_few(ctx):
        if max(ctx.params["stages"].values()) > 4:
            ctx.add("stages", "at most 4 stages")

    cs.register_backbone("staged", "mynets:build", hosts=("early_exit",),
                         params={"stages": cs.Param("int", 2, lo=1)}, check=stages_must_be_few,
                         depth=lambda keys: (min(keys["stages"].values()),
                                             max(keys["stages"].values())))
    try:
        text = ("name: s\ntask: {dataset: digits}\nmodel:\n  backbone: staged\n"
                "  stages: {choice: [2, 5]}\n  components:\n    early_exit:\n"
                "      enabled: true\n      positions: [5]\n")
        with pytest.raises(cs.SpaceError) as caught:
            parse_space(text, "s.yaml")
        assert str(caught.value).splitlines() == [
            "s.yaml:5: model.stages: at most 4 stages",
            "s.yaml:9: model.components.early_exit.positions: exit positions [5] must lie before "
            "the last layer (1..depth-1, and depth is at most 5)"]
    finally:
        unregister_backbone("staged")


def test_registering_a_declared_factory_takes_its_declaration():
    @cs.declare_backbone(params={"width": cs.Param("int", 8, lo=1)}, hosts=("early_exit",))
    def build(model, io):
        raise AssertionError("not built here")

    decl = cs.register_backbone("declared_once", build)
    try:
        assert set(decl.params) == {"width"} and decl.hosts == ("early_exit",)
        assert cs.register_backbone("declared_once", build, hosts=()).hosts == ("early_exit",)
    finally:
        unregister_backbone("declared_once")
