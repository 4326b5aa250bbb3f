"""Every Python block of the README and of docs/ runs as written, in a fresh interpreter, from a
folder holding the repository's search spaces (what a user has after cloning). python-api.md
and extending.md have tests of their own (test_docs_python_api.py, test_docs_reference.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: pages whose blocks another test runs
OWN_TESTS = {"python-api.md", "extending.md"}
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "deploy").glob("*.md")), *sorted((ROOT / "examples").glob("*.md"))]
#: a block that trains takes over ~5 s on a busy 2-core machine
TRAINS = ("cs.search(", "study.optimize(", "cs.run_trial(", "cs.fit(")


def blocks() -> list:
    found = []
    for page in PAGES:
        if page.name in OWN_TESTS:
            continue
        text = page.read_text(encoding="utf-8")
        for match in PYTHON_BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{page.relative_to(ROOT)}:{line}"
            slow = [pytest.mark.slow] if any(c in match.group(1) for c in TRAINS) else []
            found.append(pytest.param(where, match.group(1), id=where, marks=slow))
    return found


def test_the_pages_hold_python_blocks_to_run():
    assert len(blocks()) >= 3


@pytest.mark.parametrize("where,code", blocks())
def test_each_python_block_runs_as_written(where: str, code: str, tmp_path: Path):
    (tmp_path / "search_spaces").symlink_to(ROOT / "search_spaces")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{where}: the block exits {done.returncode}\n{done.stderr[-3000:]}"
