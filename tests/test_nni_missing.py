"""Without the `nni` extra the core works, and asking for NNI says which command installs it.

Each case runs in a fresh interpreter whose import system is told that `nni` does not exist,
as on a core install (this file runs whether or not the extra is installed).
"""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = 'pip install "condsearch[nni]"'
SPACE = """\
name: no_nni
task: {dataset: digits, train_limit: 200}
model: {backbone: token_transformer, dim: 8, depth: {int: [1, 2]}, patch_size: 4}
train: {epochs: 1}
sampler: {nni: tpe}
"""


def without_nni(*argv: str) -> subprocess.CompletedProcess:
    """`condsearch ARGV` in an interpreter where `import nni` fails."""
    code = ("import sys; sys.modules['nni'] = None; from condsearch.cli import main; "
            f"sys.argv = ['condsearch', *{list(argv)!r}]; main()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # two fresh interpreters, one of them starting a search (5-10 s here)
def test_choosing_an_nni_tuner_without_nni_says_which_command_installs_it(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    assert without_nni("validate", str(tmp_path / "space.yaml")).returncode == 0
    done = without_nni("search", str(tmp_path / "space.yaml"), "--workdir",
                       str(tmp_path / "run"), "--quiet")
    assert done.returncode == 2, done.stderr
    assert "sampler {nni: tpe} needs NNI, an optional extra of condsearch; install it with: " \
           f"{INSTALL}" in done.stderr
    assert "Traceback" not in done.stderr
    study_db = tmp_path / "run" / "study.db"
    assert not study_db.exists() or not optuna.get_all_study_names(f"sqlite:///{study_db}")


def test_convert_to_nni_without_nni_says_which_command_installs_it(tmp_path):
    done = without_nni("convert", str(ROOT / "search_spaces/digits_moe.yaml"), "--to", "nni",
                       str(tmp_path / "moe.json"))
    assert done.returncode == 2
    assert f"condsearch convert --to nni needs NNI, an optional extra of condsearch; install it " \
           f"with: {INSTALL}" in done.stderr
    assert not (tmp_path / "moe.json").exists()


def test_the_core_and_reading_nni_files_work_without_nni(tmp_path):
    (tmp_path / "s.json").write_text('{"model.dim": {"_type": "choice", "_value": [8, 16]},'
                                     ' "model.depth": {"_type": "randint", "_value": [1, 3]}}')
    done = without_nni("convert", str(tmp_path / "s.json"), "--from", "nni",
                       str(tmp_path / "s.yaml"), "--task", "digits")
    assert done.returncode == 0, done.stderr
    assert without_nni("validate", str(tmp_path / "s.yaml")).returncode == 0
