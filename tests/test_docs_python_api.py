"""docs/python-api.md stays true to the code: every public name of condsearch has a section,
every section names a public name, and every Python block runs as written, on its own, in a
fresh interpreter started from the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import condsearch

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "python-api.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^### `condsearch\.(\w+)`$", re.MULTILINE)
#: a block that trains (a search, a trial, a fit) takes over ~5 s on a busy 2-core machine
TRAINS = ("cs.search(", "study.optimize(", "cs.run_trial(", "cs.fit(")


def python_blocks() -> list[tuple[int, str]]:
    """(line of the opening fence, code) of each ```python block."""
    text = PAGE.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


def test_every_public_name_has_a_section_and_every_section_a_public_name():
    documented = HEADING.findall(PAGE.read_text(encoding="utf-8"))
    missing = sorted(set(condsearch.__all__) - set(documented))
    assert not missing, f"docs/python-api.md: no `### `condsearch.NAME`` section for {missing}"
    unknown = sorted(set(documented) - set(condsearch.__all__))
    assert not unknown, f"docs/python-api.md documents {unknown}, not in condsearch.__all__"
    assert len(documented) == len(set(documented)), "a name has two sections"


def test_every_section_has_an_example():
    text = PAGE.read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    for section in sections:
        name = section.splitlines()[0]
        assert "```python\n" in section.split("\n## ")[0], f"{name}: no python example"


def _block(line: int, code: str):
    slow = any(call in code for call in TRAINS)
    return pytest.param(line, code, id=f"line{line}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("line,code", [_block(line, code) for line, code in python_blocks()])
def test_each_python_block_runs_on_its_own(line: int, code: str, tmp_path: Path):
    # The blocks write only to temporary folders: TMPDIR puts those in this test's own.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (
        f"docs/python-api.md:{line}: the block exits {done.returncode}\n{done.stderr[-3000:]}")
