"""Every script in examples/ runs as a user would run it (`python examples/NAME.py` from the
repository root, in a fresh interpreter) with the tiny budget CI uses, and exits 0. Its files go
to a temporary folder (CONDSEARCH_EXAMPLE_OUT), and HOME is a temporary one, so nothing is left
in the repository or the developer's home."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _case(path: Path):
    marks = [pytest.mark.slow]  # each trains a few models: over ~5 s
    if path.name.startswith("ray_") and importlib.util.find_spec("ray") is None:
        marks.append(pytest.mark.skip(reason="needs Ray: pip install 'condsearch[ray]'"))
    return pytest.param(path, id=path.stem, marks=marks)


def test_there_are_examples_and_a_readme_naming_each():
    readme = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        assert f"python examples/{path.name}" in readme, f"examples/README.md: {path.name}"


@pytest.mark.parametrize("path", [_case(p) for p in EXAMPLES])
def test_each_example_runs_with_the_tiny_budget(path: Path, tmp_path: Path):
    before = _repository_files()
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "CONDSEARCH_EXAMPLE_TINY": "1",
           "CONDSEARCH_EXAMPLE_OUT": str(tmp_path / "out"), "HOME": str(home)}
    done = subprocess.run([sys.executable, str(path.relative_to(ROOT))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"examples/{path.name} exits {done.returncode}\n{done.stdout[-2000:]}\n"
        f"{done.stderr[-3000:]}")
    assert done.stdout.strip(), f"examples/{path.name} printed nothing"
    assert (tmp_path / "out").is_dir(), f"examples/{path.name} ignores CONDSEARCH_EXAMPLE_OUT"
    left = _repository_files() - before
    assert not left, f"examples/{path.name} left {sorted(left)} in the repository"


def _repository_files() -> set[str]:
    """What an example could leave in the repository: its default output folder, MLflow's
    default stores and artifact folders, databases at the root (other engineers' files
    elsewhere are not this test's business)."""
    found = {p for p in ("runs/examples", "mlruns", "mlartifacts") if (ROOT / p).exists()}
    return found | {p.name for p in ROOT.glob("*.db")}
