"""Hostile YAML: a small file cannot exhaust memory or time in `condsearch validate` (alias
expansion, nesting depth and file size are limited; see "Limits" in docs/search-space.md)."""

import json
import subprocess
import sys
import time

import pytest
from helpers import problems

from condsearch.space import SpaceError, load_space, parse_space
from condsearch.space._limits import MAX_CHARS, MAX_DEPTH, MAX_NODES

LETTERS = "abcdefghi"
VALID = """\
name: t
task:
  dataset: digits
model:
  backbone: token_transformer
  dim: 16
  depth: 2
"""

# Runs a command in a child and prints its exit status, output and peak memory (KB) as JSON: this
# middle process has that one child, so RUSAGE_CHILDREN's ru_maxrss is the child's own peak.
PEAK = """\
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps([done.returncode, done.stdout + done.stderr, peak]))
"""


def measured(*command: str) -> tuple[int, str, int, float]:
    """(exit status, output, peak memory in KB, seconds) of `command` run in a fresh process."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True,
                          timeout=180, check=True)
    seconds = time.monotonic() - start
    status, output, peak = json.loads(done.stdout)
    return status, output, peak, seconds


def laughs(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" document: each level a list of `width` aliases of the level before."""
    lines = ["a: &a [" + ", ".join(["lol"] * width) + "]"]
    for before, name in zip(LETTERS, LETTERS[1:levels]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{before}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused_quickly_in_little_memory(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs(), encoding="utf-8")
    assert path.stat().st_size < 1024
    *_, baseline, _ = measured(sys.executable, "-c", "import condsearch.space")
    status, output, peak, seconds = measured(sys.executable, "-m", "condsearch", "validate",
                                             str(path))
    assert status == 2, output
    (line,) = output.splitlines()
    assert "Traceback" not in output
    # stopped inside the expansion of the first list of aliases past the limit, at its key
    assert line.startswith(f"{path}:5: e: the document holds more than {MAX_NODES:,} values")
    assert seconds < 5, f"took {seconds:.1f} s"  # loose, for a loaded machine: it took minutes
    assert peak - baseline < 100 * 1024, f"peak {peak} KB, baseline {baseline} KB"


@pytest.mark.parametrize("text,where", [
    # merge keys (`<<`) copy the merged pairs, so they expand like aliases
    ("a: &a {" + ", ".join(f"k{i}: x" for i in range(9)) + "}\n"
     + "".join(f"{n}: &{n} {{<<: [{', '.join([f'*{b}'] * 9)}]}}\n"
               for b, n in zip(LETTERS, LETTERS[1:])), "space.yaml:5: e.<<: "),
    # keys are built too, so an expansion hidden in keys counts
    ("? &a [" + ", ".join(["lol"] * 9) + "]\n: 1\n"
     + "".join(f"? &{n} [{', '.join([f'*{b}'] * 9)}]\n: 1\n"
               for b, n in zip(LETTERS, LETTERS[1:])), "space.yaml:1: (document): "),
])
def test_other_alias_expansions_are_refused(text, where):
    (line,) = problems(text)
    assert line.startswith(where) and f"more than {MAX_NODES:,} values" in line


def test_a_deeply_nested_document_is_refused_naming_the_depth():
    deep = "".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n"
    (line,) = problems(deep)
    # the key past the limit: k0 ... k64, on line 65; the path is shown cut short
    assert line == (f"space.yaml:65: k0.k1.k2.k3.k4.k5...: nested more than {MAX_DEPTH} levels "
                    f"deep; a search space may nest at most {MAX_DEPTH} levels")


def test_flow_nesting_too_deep_for_the_parser_is_refused():
    (line,) = problems("x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert line.startswith("space.yaml:1: x[0][0][0][0][0]...: nested more than")


def test_a_recursive_alias_is_refused_as_too_deep():
    assert problems("a: &a [*a]\n") == [
        f"space.yaml:1: a: nested more than {MAX_DEPTH} levels deep; a search space may nest at "
        f"most {MAX_DEPTH} levels"]


def test_many_plain_values_are_refused():
    (line,) = problems("x: [" + ",".join(["1"] * (MAX_NODES + 10)) + "]\n")
    assert line.startswith(f"space.yaml:1: x[{MAX_NODES - 3}]: the document holds more than")


def test_a_large_file_is_refused_unread_naming_its_size(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "#" * (5 * 1024 * 1024) + "\n", encoding="utf-8")
    size = path.stat().st_size
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:1: (file): the file is too large ({size:,} bytes); a search space may hold at "
        f"most {MAX_CHARS:,} characters (about 1 MB)"]
    with pytest.raises(SpaceError, match=r"space.yaml:1: \(file\): the file is too large"):
        parse_space(path.read_text(encoding="utf-8"), "space.yaml")


def test_a_space_with_a_few_legitimate_aliases_validates(tmp_path):
    text = VALID.replace("  depth: 2\n", "  depth: &two 2\n  heads: *two\n") + (
        "train:\n"
        "  lr: &lr {float: [2.0e-3, 2.0e-2], log: true}\n"
        "  epochs: 1\n"
        "sampler:\n"
        "  name: tpe\n"
        "  options: {seed: 3, other: *lr}\n")
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    space = load_space(path)
    assert "train.lr" in space.distributions()
    assert space.sampler["options"]["other"] == {"float": [2.0e-3, 2.0e-2], "log": True}
    with pytest.raises(SpaceError) as info:  # a mistake after an alias still has its line
        parse_space(text + "  zzz: 1\n", "space.yaml")
    assert "space.yaml:15: sampler.zzz" in str(info.value)


def test_a_set_value_is_held_to_the_same_limits():
    levels = ["&a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for name, prev in zip("bcde", "abcd"):
        levels.append(f"&{name} [{', '.join([f'*{prev}'] * 9)}]")
    bomb = "[" + ", ".join(levels) + ", [" + ", ".join(["*e"] * 9) + "]]"
    with pytest.raises(SpaceError) as caught:
        parse_space("name: x\n", overrides=[f"task={bomb}"])
    assert "--set:1: task: value of 'task': the document holds more than" in str(caught.value)
