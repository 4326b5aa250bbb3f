"""Layering: the shared names import nothing, the search package never loads the NNI plugin for
an Optuna sampler, and the plugin reaches the search only through its public package and the
sampler registry (an entry point of the group `condsearch.samplers`)."""

import ast
import importlib.util
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import optuna
import pytest

from condsearch import _names
from condsearch.orchestrate import _samplers

ROOT = Path(__file__).resolve().parents[1]
HAS_NNI = importlib.util.find_spec("nni") is not None


def fresh(code: str) -> str:
    """Run `code` in a fresh interpreter; its stdout (the test fails with its stderr)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def imports_of(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_shared_names_import_nothing():
    assert imports_of(ROOT / "condsearch/_names.py") <= {"__future__", "typing"}
    out = fresh("import sys, condsearch._names\n"
                "print(sorted(m for m in sys.modules if m.startswith(('condsearch', 'torch', "
                "'optuna'))))")
    assert out.strip() == "['condsearch', 'condsearch._names']"


def test_an_optuna_sampler_loads_no_interop_module():
    out = fresh("import sys, condsearch, condsearch.orchestrate\n"
                "assert callable(condsearch.search)  # the public search function\n"
                "from condsearch.orchestrate._samplers import make_sampler\n"
                "sampler = make_sampler({'name': 'tpe'}, 0)\n"
                "print(type(sampler).__name__)\n"
                "print([m for m in sys.modules if m.startswith('condsearch.interop')])\n")
    assert out.split("\n")[:2] == ["TPESampler", "[]"]


def test_the_nni_sampler_imports_no_private_module_of_the_search_package():
    imported = imports_of(ROOT / "condsearch/interop/_nni_sampler.py")
    private = sorted(m for m in imported if m.startswith("condsearch.orchestrate."))
    assert private == []
    assert "condsearch.orchestrate" in imported


def test_the_entry_point_names_the_nni_factory():
    (plugin,) = [ep for ep in entry_points(group=_samplers.ENTRY_POINT_GROUP) if ep.name == "nni"]
    assert plugin.value == "condsearch.interop._nni_sampler:nni_sampler"


@pytest.mark.skipif(not HAS_NNI, reason='the NNI tuners need pip install "condsearch[nni]"')
def test_an_nni_space_gets_its_sampler_through_the_registry():
    out = fresh(
        "import sys\n"
        "from condsearch.orchestrate._samplers import make_sampler, registered_kinds\n"
        "from condsearch.space import parse_space\n"
        "space = parse_space('''name: reg\n"
        "task: {dataset: digits, train_limit: 200}\n"
        "model: {backbone: token_transformer, dim: {choice: [8, 16]}, depth: 1, patch_size: 4}\n"
        "train: {epochs: 1}\n"
        "sampler: {nni: random}\n''')\n"
        "assert 'nni' not in registered_kinds()\n"
        "assert not [m for m in sys.modules if m.startswith('condsearch.interop')]\n"
        "sampler = make_sampler(space.sampler, 0, space)\n"
        "print(type(sampler).__module__, type(sampler).__name__, sampler.tuner_name)\n"
        "print('nni' in registered_kinds())\n")
    assert out.split("\n")[:2] == ["condsearch.interop._nni_sampler NniSampler random", "True"]


def test_the_builtin_samplers_are_the_shared_names():
    assert set(_names.SAMPLERS) <= set(_samplers.registered_kinds())
    classes = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
               "random": optuna.samplers.RandomSampler, "gp": optuna.samplers.GPSampler}
    for name in _names.SAMPLERS:
        assert type(_samplers.make_sampler({"name": name, "options": {}}, 0)) is classes[name]


def test_a_registered_kind_is_built_by_its_factory(monkeypatch):
    monkeypatch.setattr(_samplers, "_FACTORIES", dict(_samplers._FACTORIES))
    seen = []

    def factory(spec, seed, space):
        seen.append((spec, seed, space))
        return optuna.samplers.RandomSampler(seed=seed)

    _samplers.register_sampler("mine", factory)
    sampler = _samplers.make_sampler({"name": "mine"}, 7, "SPACE")
    assert isinstance(sampler, optuna.samplers.RandomSampler)
    assert seen == [({"name": "mine"}, 7, "SPACE")]


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown sampler 'annealing'; known: .*gp.*nni.*tpe"):
        _samplers.make_sampler({"name": "annealing"}, 0)
