"""The docs stay true to the code: search-space.md's key tables are the ones the declarations
render, and every Python block of extending.md runs as written in a fresh interpreter."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from condsearch.space._reference import COMMAND, DOC, reference_markdown, rendered_block

ROOT = Path(__file__).resolve().parents[1]
EXTENDING = ROOT / "docs" / "extending.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of each ```python block."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


def test_the_reference_tables_are_those_the_declarations_render():
    assert DOC == ROOT / "docs" / "search-space.md"
    written = rendered_block(DOC.read_text(encoding="utf-8"))
    assert written == reference_markdown(), (
        f"{DOC.relative_to(ROOT)}: the reference block differs from the declarations; "
        f"regenerate it with `{COMMAND}` (from the repository root)")


def test_the_reference_covers_every_declared_thing():
    from condsearch.space import BUILTIN_BACKBONES, BUILTIN_COMPONENTS, TRAIN_PARAMS

    rendered = reference_markdown()
    for name in [*BUILTIN_BACKBONES, *BUILTIN_COMPONENTS, "conv_net", "train"]:
        assert f"### `{name}` keys" in rendered
    for key in TRAIN_PARAMS:
        assert f"| `{key}` |" in rendered


def test_extending_has_python_blocks():
    assert len(python_blocks(EXTENDING)) >= 5


def _block(line: int, code: str):
    """A block as a test case; one that runs a search takes over ~5 s, so it is marked slow."""
    slow = "cs.search(" in code
    return pytest.param(line, code, id=f"line{line}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("line,code", [_block(line, code) for line, code in python_blocks(EXTENDING)])
def test_each_python_block_of_extending_runs_on_its_own(line: int, code: str):
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (
        f"docs/extending.md:{line}: the block exits {done.returncode}\n{done.stderr[-3000:]}")
