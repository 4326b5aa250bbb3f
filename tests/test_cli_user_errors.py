"""Every user error is one line on stderr and exit 2, with nothing created or overwritten: bad
--trials and --seed (and search.seed), a workdir that is a file, an export --out that is a file
or a foreign non-empty directory. Exports are written atomically, and a truncated export file is
an ExportError naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import cli

from condsearch.export import ExportError, export_point, read_export

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "digits_early_exit.yaml"
TINY = ("--set", "train.epochs=1", "--set", "task.train_limit=200")
FILES = {"architecture.yaml", "weights.safetensors", "metrics.json"}


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under `root` with its size, mtime and (for a small file) content."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        text = path.read_bytes()[:4096].hex() if path.is_file() else ""
        out[str(path.relative_to(root))] = (stat.st_size if path.is_file() else 0,
                                            stat.st_mtime_ns, text)
    return out


def one_line_exit_2(result) -> str:
    """The single stderr line of a refused command."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- search: --trials, --seed, search.seed, the workdir -------------------------------------


@pytest.mark.parametrize("trials", ["0", "-1"])
def test_trials_below_one_are_refused_before_anything_is_created(tmp_path, trials):
    before = snapshot(tmp_path)
    line = one_line_exit_2(cli("search", str(SPACE), "--trials", trials, "--quiet", cwd=tmp_path))
    assert line == f"--trials must be >= 1, got {trials}"
    assert snapshot(tmp_path) == before  # no runs/<name>, no study, no MLflow run


@pytest.mark.parametrize("seed", ["-1", str(2**31), str(2**32 - 3)])
def test_seeds_out_of_range_are_refused(tmp_path, seed):
    before = snapshot(tmp_path)
    line = one_line_exit_2(cli("search", str(SPACE), "--seed", seed, "--trials", "1",
                               "--workdir", str(tmp_path / "run"), cwd=tmp_path))
    assert line.startswith("--seed must be between 0 and 2147483647") and line.endswith(seed)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("seed", ["-1", str(2**31)])
def test_a_yaml_seed_out_of_range_is_a_file_line_error(tmp_path, seed):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.read_text().replace("search:\n  trials: 16\n  seed: 0",
                                               f"search:\n  trials: 16\n  seed: {seed}"))
    line_no = space.read_text().splitlines().index(f"  seed: {seed}") + 1
    before = snapshot(tmp_path)
    line = one_line_exit_2(cli("search", str(space), "--quiet", cwd=tmp_path))
    bound = ">= 0" if seed == "-1" else "<= 2147483647"
    assert line == f"{space}:{line_no}: search.seed: must be {bound}, got {seed}"
    assert snapshot(tmp_path) == before


def test_the_largest_seed_is_valid_and_the_bounds_agree():
    from condsearch import cli as cli_module
    from condsearch.space._schema import MAX_SEED

    assert cli_module.MAX_SEED == MAX_SEED == 2**31 - 1
    result = cli("validate", str(SPACE), "--set", f"search.seed={MAX_SEED}")
    assert result.returncode == 0, result.stderr


def test_an_unreachable_tracking_server_is_one_line_before_anything_is_created(tmp_path):
    from helpers import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    line = one_line_exit_2(cli("search", str(SPACE), "--workdir", str(tmp_path / "run"),
                               "--tracking-uri", uri, "--trials", "1", "--quiet"))
    assert line.startswith(f"cannot reach the MLflow tracking server at {uri} (")
    assert not (tmp_path / "run" / "study.db").exists()


@pytest.mark.parametrize("command", ["pareto", "search"])
def test_a_database_url_without_its_driver_is_one_line_naming_the_extra(tmp_path, command):
    pytest.importorskip("sqlalchemy")
    import importlib.util

    if importlib.util.find_spec("psycopg") or importlib.util.find_spec("psycopg2"):
        pytest.skip("a PostgreSQL driver is installed here")
    url = "postgresql://user:secret@127.0.0.1:1/optuna"
    args = ["pareto", "--storage", url] if command == "pareto" else [
        "search", str(SPACE), "--workdir", str(tmp_path / "run"), "--storage", url]
    line = one_line_exit_2(cli(*args))
    assert line.startswith("postgresql://user:***@127.0.0.1:1/optuna: its database driver is "
                           "not installed")
    assert line.endswith('pip install "condsearch[postgres]"') and "secret" not in line


@pytest.mark.parametrize("sub", ["", "sub"])
def test_a_workdir_that_is_a_file_is_one_line(tmp_path, sub):
    afile = tmp_path / "some_file"
    afile.write_text("mine\n")
    workdir = afile / sub if sub else afile
    before = snapshot(tmp_path)
    line = one_line_exit_2(cli("search", str(SPACE), "--trials", "1", "--quiet", "--workdir",
                               str(workdir), cwd=tmp_path))
    where = "is a file" if not sub else f"cannot be created: {afile} is a file"
    assert line == f"{workdir}: not a directory ({where}); use another --workdir"
    for command in (["pareto"], ["export", "--pick", "knee", "--out", str(tmp_path / "e")]):
        assert "not a directory" in one_line_exit_2(cli(*command, "--workdir", str(workdir)))
    assert snapshot(tmp_path) == before


# ---- reading an export ----------------------------------------------------------------------


def fake_export(path: Path) -> Path:
    """An export's three files, well formed enough for read_export."""
    from condsearch.export._files import sha256

    path.mkdir()
    (path / "weights.safetensors").write_bytes(b"weights")
    (path / "architecture.yaml").write_text("model: {backbone: token_transformer}\n")
    (path / "metrics.json").write_text(json.dumps(
        {"weights_sha256": sha256(path / "weights.safetensors")}))
    return path


@pytest.mark.parametrize(("name", "text"), [
    ("metrics.json", ""), ("metrics.json", '{"trial": 3, "val'), ("metrics.json", "[1, 2]"),
    ("architecture.yaml", ""), ("architecture.yaml", "model: {backbone: [tok"),
    ("architecture.yaml", "\udcff"),
])
def test_a_truncated_or_corrupt_export_file_is_an_export_error_naming_it(tmp_path, name, text):
    path = fake_export(tmp_path / "exp")
    assert read_export(path)[1]["weights_sha256"]
    if text == "\udcff":
        (path / name).write_bytes(b"\xff\xfe\x00bad")
    else:
        (path / name).write_text(text)
    with pytest.raises(ExportError, match="corrupt or truncated") as info:
        read_export(path)
    assert str(info.value).startswith(f"{path / name}: ")
    assert "\n" not in str(info.value)


# ---- export --out, on one finished search ---------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A finished two-trial digits search, shared by the export tests."""
    workdir = tmp_path_factory.mktemp("searched") / "run"
    result = cli("search", str(SPACE), *TINY, "--trials", "2", "--quiet", "--workdir",
                 str(workdir))
    assert result.returncode == 0, result.stderr
    return workdir


def export(searched: Path, out: Path, *more: str):
    return cli("export", "--workdir", str(searched), "--pick", "knee", "--out", str(out), *more)


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.mark.slow
def test_export_out_that_is_a_file_is_one_line(searched, tmp_path):
    afile = tmp_path / "some_file"
    afile.write_text("mine\n")
    before = snapshot(tmp_path)
    line = one_line_exit_2(export(searched, afile))
    assert line == f"{afile}: not a directory (is a file); choose another --out"
    line = one_line_exit_2(export(searched, afile / "sub"))
    assert line.endswith(f"cannot be created: {afile} is a file); choose another --out")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_export_into_a_foreign_directory_needs_force(searched, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    (out / "metrics.json").write_text("my own metrics\n")
    before = snapshot(tmp_path)
    line = one_line_exit_2(export(searched, out))
    assert line.startswith(f"{out}: directory is not empty and not a previous export")
    assert "--force" in line
    assert snapshot(tmp_path) == before

    result = export(searched, out, "--force")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == FILES | {"notes.txt"}
    assert (out / "notes.txt").read_text() == "keep me\n"
    assert read_export(out)[1]["trial"] >= 0
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_a_previous_export_is_replaced_whole(searched, tmp_path):
    out = tmp_path / "knee"
    assert export(searched, out).returncode == 0
    assert {p.name for p in out.iterdir()} == FILES and leftovers(tmp_path) == []
    first = read_export(out)[1]
    (out / "metrics.json").write_text("")  # as an export killed mid-write once left it
    assert "corrupt or truncated" in str(pytest.raises(ExportError, read_export, out).value)
    inode = out.stat().st_ino
    result = export(searched, out)
    assert result.returncode == 0, result.stderr
    assert read_export(out)[1] == first
    assert out.stat().st_ino != inode  # renamed into place, not written over
    assert {p.name for p in out.iterdir()} == FILES and leftovers(tmp_path) == []


@pytest.mark.slow
def test_an_export_that_fails_mid_write_leaves_out_untouched(searched, tmp_path, monkeypatch):
    from condsearch.export import _export

    out = tmp_path / "knee"
    export_point(searched, out, pick="knee")
    before = snapshot(tmp_path)
    real, calls = _export._download, []

    def dies_on_the_second_file(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the weights were written
        return real(*args)

    monkeypatch.setattr(_export, "_download", dies_on_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        export_point(searched, out, pick="knee")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        export_point(searched, tmp_path / "new", pick="knee")
    assert snapshot(tmp_path) == before  # neither the previous export nor a partial one
    assert os.listdir(tmp_path) == ["knee"]
