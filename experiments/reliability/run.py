"""The fault suite: inject each fault into real searches and count the completed trials lost.

Every scenario runs the real command line (`python -m condsearch ...` subprocesses) on a real
Optuna SQLite study and a real MLflow store in a temporary folder, with tiny trainings on the
digits task (a few seconds a trial), injects one fault (a killed driver, Ctrl-C, a NaN or
crashing trial, an MLflow outage, a killed Ray worker, three drivers on one study, an edited or
half-written export, hostile YAML, resource bombs, a hung trial, a copied or moved workdir,
corrupt files, a full disk), recovers the way a user would (usually: run the same command again),
and measures:

- the completed trials in the study before the fault and after the recovery, and the trials
  lost: completed before, but no longer COMPLETE with the same values after (target: 0);
- what was expected against what happened: exit status, the one-line message, trial states and
  failure reasons in the study, run states in MLflow, files left unchanged, time and the
  child's peak memory where the row is about them.

Each scenario catches its own exceptions and reports a failed row. The rows go to
`results.json` and the table in `README.md` (between the RESULTS markers), beside this file or
in `--out`.

    python experiments/reliability/run.py                    # every scenario (a few minutes)
    python experiments/reliability/run.py --quick            # shorter trials and waits (CI)
    python experiments/reliability/run.py --only ctrl_c nan_trial
    python experiments/reliability/run.py --list             # the scenarios, one a line
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reporting import machine, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
PY = sys.executable
BIN = Path(sys.executable).parent
DERIVED_FROM = "condsearch.derived_from"
ERROR = "condsearch.error"
RUN_ID = "condsearch.run_id"
MLFLOW_SETTINGS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
                   "MLFLOW_RUN_ID")
MB = 1024  # ru_maxrss and VmRSS are in KB

# ---- search spaces -------------------------------------------------------------------------------

# Early exit always on, its threshold sampled in [0.65, 0.95]: every completed trained trial has
# exactly one derived point (the swept 0.6), which the disk-full row checks.
TINY = """\
name: NAME
task: {dataset: digits, train_limit: LIMIT}
model:
  backbone: token_transformer
  dim: 16
  depth: DEPTH
  heads: 2
  patch_size: 4
  components:
    early_exit: {enabled: true, threshold: {float: [0.65, 0.95]}}
objectives: [accuracy, flops]
train: {epochs: EPOCHS, batch_size: 32, lr: 5.0e-3, eval_batch_size: 256}
sampler: random
sweep: {early_exit.threshold: [0.6]}
search: {trials: 2, seed: 0}
"""

# A user's backbone by import path (faulty_nets.py, copied beside the space). max_flops bounds
# the hypervolume's reference, so no candidate is built before the first trial.
FAULTY = """\
name: NAME
task: {dataset: digits, train_limit: 200}
model:
  backbone: "faulty_nets:build"
  mode: MODE
  width: {choice: [8, 16]}
objectives: [accuracy, flops]
constraints: {max_flops: 1.0e+12}
train: {epochs: 1, batch_size: 64, lr: 5.0e-3, eval_batch_size: 256}
sampler: random
search: {trials: 3, seed: 0}
"""

# The base a resource bomb is set into with --set.
BOMB = """\
name: bomb
task: {dataset: digits, train_limit: 200}
model:
  backbone: token_transformer
  dim: 16
  depth: 2
  heads: 2
  patch_size: 4
  components:
    early_exit: {enabled: true}
objectives: [accuracy, flops]
train: {epochs: 1, batch_size: 64, lr: 5.0e-3, eval_batch_size: 256}
sampler: random
search: {trials: 1, seed: 0}
"""


def tiny_space(folder: Path, name: str, epochs: int = 1, limit: int = 200, depth: int = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(TINY.replace("NAME", name).replace("LIMIT", str(limit))
                    .replace("DEPTH", str(depth)).replace("EPOCHS", str(epochs)))
    return path


def faulty_space(folder: Path, name: str, mode: str) -> Path:
    shutil.copy(HERE / "faulty_nets.py", folder / "faulty_nets.py")
    path = folder / f"{name}.yaml"
    path.write_text(FAULTY.replace("NAME", name).replace("MODE", mode))
    return path


def laughs(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" document: each level a list of `width` aliases of the level before
    (9 levels of 9: 387 million values once expanded, under 1 KB written)."""
    letters = "abcdefghi"
    lines = ["a: &a [" + ", ".join(["lol"] * width) + "]"]
    for before, name in zip(letters, letters[1:levels]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{before}"] * width) + "]")
    return "\n".join(lines) + "\n"


# ---- processes -----------------------------------------------------------------------------------

# The middle process every measured command runs under: it starts the command (with the file-size
# limit of a "full disk" when asked, SIGXFSZ ignored so a write fails with EFBIG instead of
# killing the process), polls its memory, kills its process group past a time or memory guard,
# and prints the exit status, the seconds and the peak RSS. It has that one child, so
# RUSAGE_CHILDREN's ru_maxrss is the command's own peak.
MONITOR = r"""
import json, os, resource, signal, subprocess, sys, time
cfg = json.loads(sys.argv[1])

def limits():
    if cfg.get("fsize") is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["fsize"], cfg["fsize"]))

def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

start = time.monotonic()
killed = None
with open(cfg["out"], "w") as out, open(cfg["err"], "w") as err:
    proc = subprocess.Popen(cfg["cmd"], stdout=out, stderr=err, cwd=cfg["cwd"], env=cfg["env"],
                            preexec_fn=limits, start_new_session=True)
    while True:
        try:
            proc.wait(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            pass
        rss, elapsed = rss_kb(proc.pid), time.monotonic() - start
        if cfg.get("rss_kb") and rss > cfg["rss_kb"]:
            killed = f"killed by the harness at {rss // 1024} MB RSS (guard {cfg['rss_kb'] // 1024} MB)"
        elif elapsed > cfg["timeout"]:
            killed = f"killed by the harness: still running after {cfg['timeout']:.0f} s"
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
seconds = time.monotonic() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": proc.returncode, "seconds": seconds, "peak_kb": peak, "killed": killed}))
"""


@dataclass
class Done:
    """What a finished command left: exit status, output, time, peak memory."""

    rc: int | None
    out: str
    err: str
    seconds: float = 0.0
    peak_mb: float = 0.0
    killed: str | None = None

    def lines(self) -> list[str]:
        return [line for line in self.err.strip().splitlines() if line.strip()]

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.err + self.out

    def one_line(self) -> str | None:
        """The message of a refused command, when it is exactly one line and no traceback."""
        lines = self.lines()
        return lines[0] if len(lines) == 1 and not self.traceback else None

    def last(self, width: int = 160) -> str:
        lines = self.lines()
        return short(lines[-1], width) if lines else "(no output on stderr)"


#: the scenarios' temporary folder, shown as $TMP so the table reads the same from run to run
TMP_ROOTS: list[str] = []


def short(text: str, width: int = 160) -> str:
    text = " ".join(str(text).split())
    for root in TMP_ROOTS:
        text = text.replace(root, "$TMP")
    return text if len(text) <= width else text[:width - 1] + "…"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a search: none of MLflow's settings (each logs into its own store),
    unbuffered output, a heartbeat every second."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_SETTINGS}
    env.update(PYTHONUNBUFFERED="1", CONDSEARCH_HEARTBEAT_S="1")
    env.update(extra)
    return env


def condsearch(*args: Any) -> list[str]:
    return [PY, "-m", "condsearch", *(str(a) for a in args)]


def run_cmd(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
            rss_mb: float | None = None, fsize: int | None = None) -> Done:
    """Run `cmd` under the monitor; its output is kept in files under `cwd`."""
    tag = f"{int(time.monotonic() * 1000) % 10**8}"
    out, err = cwd / f".out-{tag}", cwd / f".err-{tag}"
    cfg = {"cmd": cmd, "cwd": str(cwd), "env": env or child_env(), "timeout": timeout,
           "rss_kb": int(rss_mb * MB) if rss_mb else None, "fsize": fsize,
           "out": str(out), "err": str(err)}
    report = subprocess.run([PY, "-c", MONITOR, json.dumps(cfg)], capture_output=True, text=True,
                            timeout=timeout + 120)
    if report.returncode != 0:
        raise RuntimeError(f"the monitor failed: {report.stderr[-2000:]}")
    measured = json.loads(report.stdout.strip().splitlines()[-1])
    done = Done(measured["rc"], out.read_text(errors="replace"), err.read_text(errors="replace"),
                measured["seconds"], measured["peak_kb"] / MB, measured["killed"])
    out.unlink()
    err.unlink()
    return done


def cli(*args: Any, cwd: Path, **kwargs: Any) -> Done:
    """`condsearch ARGS` under the monitor."""
    return run_cmd(condsearch(*args), cwd, **kwargs)


class Spawned:
    """A command running in the background in a session of its own (so a signal reaches its
    whole process group, as Ctrl-C at a terminal does), its output in files."""

    #: every one started and not yet finished (a failed scenario's are killed after it)
    live: list[Spawned] = []

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str], tag: str) -> None:
        Spawned.live.append(self)
        self.out_path, self.err_path = cwd / f".{tag}.out", cwd / f".{tag}.err"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._out, stderr=self._err,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def finish(self, timeout: float) -> Done:
        """Wait for the exit (SIGKILL past `timeout`) and read what it wrote."""
        killed = None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = f"killed by the harness: still running {timeout:.0f} s later"
            self.signal(signal.SIGKILL)
            self.proc.wait()
        self._out.close()
        self._err.close()
        if self in Spawned.live:
            Spawned.live.remove(self)
        return Done(self.proc.returncode, self.out_path.read_text(errors="replace"),
                    self.err_path.read_text(errors="replace"),
                    time.monotonic() - self.started, killed=killed)


def wait_for(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (ppid, cmdline)
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


# ---- what a study and an MLflow store hold -------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def trial_states(db: Path) -> list[tuple[int, str, bool]]:
    """(number, state, derived) of every trial, read without opening Optuna's storage (which
    would race a search process creating its schema)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(
                "SELECT t.number, t.state, EXISTS(SELECT 1 FROM trial_user_attributes a WHERE "
                f"a.trial_id = t.trial_id AND a.key = '{DERIVED_FROM}') FROM trials t").fetchall()
    except sqlite3.Error:
        return []


def count(states: list[tuple[int, str, bool]], state: str, derived: bool | None = False) -> int:
    return sum(s == state and (derived is None or bool(d) == derived) for _, s, d in states)


def load_trials(storage: str, name: str | None = None) -> list[Any]:
    """Every trial of the study (the only one in `storage` when `name` is None); [] when the
    storage cannot be read."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        if name is None:
            names = optuna.get_all_study_names(storage)
            if len(names) != 1:
                return []
            name = names[0]
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - an unreadable study holds nothing we can count
        return []


def completed(trials: list[Any]) -> dict[int, tuple[float, ...]]:
    """number -> values of every COMPLETE trial (trained ones and derived points)."""
    return {t.number: tuple(t.values) for t in trials if t.state.name == "COMPLETE"}


def trained(trials: list[Any]) -> list[Any]:
    return [t for t in trials if DERIVED_FROM not in t.user_attrs]


def lost(before: dict[int, tuple], after: dict[int, tuple]) -> int:
    """Completed before, but not COMPLETE with the same values after."""
    return sum(1 for number, values in before.items() if after.get(number) != values)


def mlflow_runs(uri: str) -> list[dict[str, Any]]:
    """role, status, trial number (a derived run's: its trial's) and error tag of every run in
    the store; [] when unreadable."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, max_results=5000) if ids else []
    except Exception:  # noqa: BLE001
        return []
    return [{"id": r.info.run_id, "status": r.info.status,
             "role": r.data.tags.get("condsearch.role"),
             "trial": r.data.tags.get("condsearch.trial") or r.data.tags.get(DERIVED_FROM),
             "error": r.data.tags.get(ERROR)} for r in runs]


def running_trial_runs(db: Path) -> set[int]:
    """Numbers of the trials whose MLflow trial run is RUNNING, read from a SQLite store
    directly (quicker than MlflowClient, for polling)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(
                "SELECT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE "
                "t.key = 'condsearch.trial' AND r.status = 'RUNNING'").fetchall()
    except sqlite3.Error:
        return set()
    return {int(value) for (value,) in rows if str(value).isdigit()}


def statuses(runs: list[dict[str, Any]], role: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for run in runs:
        if run["role"] == role:
            out[run["status"]] = out.get(run["status"], 0) + 1
    return out


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root` (the monitor's output files aside): size and sha256."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith((".out-", ".err-")):
            files[str(path.relative_to(root))] = (path.stat().st_size,
                                                  hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def changed(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


# ---- rows and the registry -----------------------------------------------------------------------


@dataclass
class Row:
    """One fault: what was injected and expected, what happened, and the trials lost."""

    name: str
    fault: str
    injected: str
    expected: str
    #: the condsearch feature the row exercises, when it is not the search itself
    depends_on: str | None = None
    observed: str = ""
    completed_before: int | None = None
    completed_after: int | None = None
    lost: int | None = None
    passed: bool = False
    skipped: str | None = None
    unmet: list[str] = field(default_factory=list)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def expect(self, ok: Any, what: str) -> bool:
        """Note an expectation that did not hold (`what` says what was expected)."""
        if not ok:
            self.unmet.append(what)
        return bool(ok)

    def counted(self, before: dict[int, tuple], after: dict[int, tuple]) -> None:
        self.completed_before, self.completed_after = len(before), len(after)
        self.lost = lost(before, after)

    def nothing_to_lose(self) -> None:
        self.completed_before = self.completed_after = self.lost = 0


@dataclass
class Scenario:
    name: str
    fault: str
    injected: str
    expected: str
    run: Callable[[Context, Row], None]
    depends_on: str | None = None


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, fault: str, injected: str, expected: str,
             depends_on: str | None = None) -> Callable:
    def register(fn: Callable[[Context, Row], None]) -> Callable[[Context, Row], None]:
        SCENARIOS[name] = Scenario(name, fault, injected, expected, fn, depends_on)
        return fn

    return register


class Context:
    """Where scenarios work, how long they may take, and the things several of them share: a
    finished two-trial search to copy, started once."""

    def __init__(self, root: Path, quick: bool) -> None:
        self.root, self.quick = root, quick
        self._base: Path | None = None
        #: epochs of a "slow" trial: long enough (2-3 s on an idle 2-core machine) to be
        #: interrupted mid-trial
        self.slow_epochs = 15 if quick else 25
        #: trained trials a search completes before a kill or an interrupt
        self.done_before_fault = 1 if quick else 2

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True)
        return path

    def base(self) -> Path:
        """The workdir of a finished two-trial search (shared; scenarios work on clones)."""
        if self._base is None:
            folder = self.folder("_base")
            space = tiny_space(folder, "rel")
            done = cli("search", space, "--workdir", folder / "run", "--quiet", cwd=folder)
            if done.rc != 0:
                raise RuntimeError(f"the base search failed (exit {done.rc}): {done.last(400)}")
            self._base = folder / "run"
        return self._base

    def base_space(self) -> Path:
        """The space file of the base search."""
        return self.base().parent / "rel.yaml"

    def clone(self, dst: Path) -> Path:
        """A copy of the base workdir at `dst` that uses its own files: a `condsearch.json`
        recording absolute paths into the base (one written before the `{workdir}` form) is
        pointed at the copy's study and MLflow store, as a fresh search there would have
        written it."""
        base = self.base()
        shutil.copytree(base, dst)
        state_file = dst / "condsearch.json"
        state = json.loads(state_file.read_text())
        for key, name in (("storage", "study.db"), ("tracking_uri", "mlflow.db")):
            if state.get(key) == sqlite_url(base.resolve() / name):
                state[key] = sqlite_url(dst.resolve() / name)
        state_file.write_text(json.dumps(state, indent=2) + "\n")
        return dst


def study_url(workdir: Path) -> str:
    return sqlite_url(workdir.resolve() / "study.db")


def mlflow_url(workdir: Path) -> str:
    return sqlite_url(workdir.resolve() / "mlflow.db")


# ---- kills and interrupts ------------------------------------------------------------------------


def start_and_wait(ws: Path, space: Path, workdir: Path, trained_done: int, extra: tuple = (),
                   env: dict[str, str] | None = None, timeout: float = 240) -> Spawned:
    """A long search in the background, returned once `trained_done` trials completed and
    another one is RUNNING."""
    search = Spawned(condsearch("search", space, "--workdir", workdir, "--trials", 50, "--quiet",
                                *extra), ws, env or child_env(), "search")

    def ready() -> bool:
        if not search.alive():
            raise RuntimeError(f"the search ended early: {search.finish(5).last(400)}")
        states = trial_states(workdir / "study.db")
        return count(states, "COMPLETE") >= trained_done and count(states, "RUNNING") > 0

    try:
        wait_for(ready, timeout, f"no {trained_done} completed trials and a running one")
    except BaseException:
        search.signal(signal.SIGKILL)
        search.finish(30)
        raise
    return search


@scenario("driver_sigkill", "driver killed mid-trial",
          "SIGKILL to the search's process group while a trial trains (1-2 trained before); "
          "after 3 s, the same command again (CONDSEARCH_GRACE_S=2)",
          "the resumed search exits 0; the abandoned trial is FAIL with a `stale:` reason and "
          "its MLflow run KILLED; no trial RUNNING; the resume trains a new trial")
def driver_sigkill(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    space, workdir = tiny_space(ws, "killed", epochs=ctx.slow_epochs, limit=600, depth=2), ws / "run"
    search = start_and_wait(ws, space, workdir, trained_done=ctx.done_before_fault)
    before = completed(load_trials(study_url(workdir)))
    search.signal(signal.SIGKILL)
    search.finish(30)
    abandoned = [n for n, s, _ in trial_states(workdir / "study.db") if s == "RUNNING"]
    row.expect(abandoned, "a trial left RUNNING by the killed driver (the kill missed the trial)")
    time.sleep(3.2)  # past the 2 s grace period (SQLite's clock counts whole seconds)
    resumed = cli("search", space, "--workdir", workdir, "--trials", 1, "--quiet", cwd=ws,
                  env=child_env(CONDSEARCH_GRACE_S="2"), timeout=240)
    trials = load_trials(study_url(workdir))
    by_number = {t.number: t for t in trials}
    after = completed(trials)
    row.counted(before, after)
    row.expect(resumed.rc == 0, f"resume exits 0 (got {resumed.rc}: {resumed.last()})")
    row.expect(not resumed.traceback, "no traceback")
    stale = [n for n in abandoned if by_number[n].state.name == "FAIL"
             and str(by_number[n].user_attrs.get(ERROR, "")).startswith("stale:")]
    row.expect(len(stale) == len(abandoned), "each abandoned trial FAIL with a `stale:` reason")
    running = [t.number for t in trials if t.state.name == "RUNNING"]
    row.expect(not running, f"no trial RUNNING (trials {running} are)")
    new = [t for t in trained(trials) if t.state.name == "COMPLETE" and t.number not in before]
    row.expect(len(new) == 1, f"the resume trains 1 new trial (got {len(new)})")
    runs = mlflow_runs(mlflow_url(workdir))
    killed_runs = [r for r in runs if r["role"] == "trial" and r["trial"] in map(str, abandoned)]
    row.expect(killed_runs and all(r["status"] == "KILLED" for r in killed_runs),
               "the abandoned trial's MLflow run KILLED")
    parents = statuses(runs, "search")
    row.details.update(abandoned=abandoned, parents=parents, trial_runs=statuses(runs, "trial"))
    row.observed = (f"trial(s) {abandoned} left RUNNING; resume exit {resumed.rc}, "
                    f"{len(stale)} failed as stale, its run "
                    f"{'/'.join(sorted({r['status'] for r in killed_runs})) or 'not found'}; "
                    f"{len(new)} new trial; parent runs {parents}")


@scenario("ctrl_c", "Ctrl-C mid-trial",
          "SIGINT to the search's process group while a trial trains (1-2 trained before, the "
          "trial's MLflow run started 0.3 s earlier); then the same command again",
          "exit 130 with one line saying how to resume, no traceback; the running trial FAIL, "
          "the completed ones kept; no MLflow run left RUNNING, the parent KILLED; the resume "
          "exits 0")
def ctrl_c(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    space, workdir = tiny_space(ws, "interrupted", epochs=ctx.slow_epochs, limit=600,
                                depth=2), ws / "run"
    search = start_and_wait(ws, space, workdir, trained_done=ctx.done_before_fault)
    running: list[int] = []

    def training() -> bool:
        """A RUNNING trial's MLflow run has started: it is into its training."""
        if not search.alive():
            raise RuntimeError(f"the search ended early: {search.finish(5).last(400)}")
        running[:] = [n for n, s, _ in trial_states(workdir / "study.db") if s == "RUNNING"]
        return bool(set(running) & running_trial_runs(workdir / "mlflow.db"))

    wait_for(training, 120, "no running trial's MLflow run started", poll=0.05)
    time.sleep(0.3)
    before = completed(load_trials(study_url(workdir)))
    interrupted = time.monotonic()
    search.signal(signal.SIGINT)
    stopped = search.finish(60)
    exit_seconds = time.monotonic() - interrupted
    trials = load_trials(study_url(workdir))
    by_number = {t.number: t for t in trials}
    line = stopped.one_line()
    row.details.update(exit_seconds=exit_seconds, stderr_tail=stopped.err[-3000:],
                       states=[(t.number, t.state.name) for t in trials])
    row.expect(stopped.rc == 130, f"exit 130 (got {stopped.rc})")
    row.expect(line and "resume" in line, f"one line saying how to resume (got {len(stopped.lines())} "
                                          f"lines: {stopped.last()})")
    row.expect(all(by_number[n].state.name == "FAIL" for n in running if n in by_number),
               "the running trial FAIL")
    row.expect(not [t for t in trials if t.state.name == "RUNNING"], "no trial RUNNING")
    runs = mlflow_runs(mlflow_url(workdir))
    open_runs = [r for r in runs if r["status"] == "RUNNING"]
    row.expect(not open_runs, "no MLflow run RUNNING (" + ", ".join(
        f"{r['role']} run of trial {r['trial']}" for r in open_runs) + " is)")
    row.expect(statuses(runs, "search") == {"KILLED": 1}, "the parent run KILLED")
    resumed = cli("search", space, "--workdir", workdir, "--trials", 1, "--quiet", cwd=ws,
                  timeout=240)
    row.expect(resumed.rc == 0, f"resume exits 0 (got {resumed.rc}: {resumed.last()})")
    row.counted(before, completed(load_trials(study_url(workdir))))
    row.observed = (f"exit {stopped.rc} {exit_seconds:.0f} s after SIGINT; stderr: "
                    f"\"{stopped.last(120)}\"; interrupted trial(s) "
                    f"{running} → {[by_number[n].state.name for n in running if n in by_number]}"
                    f"; MLflow parent {statuses(runs, 'search')}, trial runs "
                    f"{statuses(runs, 'trial')}; resume exit {resumed.rc}")


#: where in a trial's cycle `ctrl_c_anywhere` interrupts, in turn
MOMENTS = ("just after a trial is asked", "just after a trial is told COMPLETE",
           "at a random moment 0-2.5 s after a trial is asked")


def moment_reached(search: Spawned, db: Path, moment: str, last: int, done: int) -> bool:
    """Whether the search is at `moment`: a trial numbered past `last` RUNNING, or more than
    `done` trained trials COMPLETE."""
    if not search.alive():
        raise RuntimeError(f"the search ended early: {search.finish(5).last(400)}")
    now = trial_states(db)
    if moment == MOMENTS[1]:
        return count(now, "COMPLETE") > done
    return any(n > last and s == "RUNNING" for n, s, _ in now)


@scenario("ctrl_c_anywhere", "Ctrl-C at any moment",
          "SIGINT to the process group just after a trial is asked, just after one is told "
          "COMPLETE, or at a seeded random moment (1 s trials), in turn: 6 tries (12 without "
          "--quick) on one workdir, each followed by the same command again",
          "every try: exit 130 in one line, no traceback; no trial RUNNING; no MLflow run "
          "RUNNING; every COMPLETE trial has its derived point; completed trials kept")
def ctrl_c_anywhere(ctx: Context, row: Row) -> None:
    import random

    ws = ctx.folder(row.name)
    space, workdir = tiny_space(ws, "anywhere"), ws / "run"
    db = workdir / "study.db"
    rng = random.Random(14)
    before: dict[int, tuple] = {}
    seen_open: set[str] = set()
    faults: dict[str, list[str]] = {}
    tries = 6 if ctx.quick else 12
    for attempt in range(tries):
        moment = MOMENTS[attempt % len(MOMENTS)]
        states = trial_states(db)
        last = max((n for n, _, _ in states), default=-1)
        done = count(states, "COMPLETE")
        search = Spawned(condsearch("search", space, "--workdir", workdir, "--trials", 50,
                                    "--quiet"), ws, child_env(), "search")

        wait_for(partial(moment_reached, search, db, moment, last, done), 120, f"not {moment}",
                 poll=0.005)
        delay = rng.uniform(0.0, 2.5) if moment == MOMENTS[2] else 0.0
        time.sleep(delay)
        before.update(completed(load_trials(study_url(workdir))))
        search.signal(signal.SIGINT)
        stopped = search.finish(60)
        trials = load_trials(study_url(workdir))
        before.update(completed(trials))  # what the interrupted search completed counts too
        runs = mlflow_runs(mlflow_url(workdir))
        open_runs = [r for r in runs if r["status"] == "RUNNING" and r["id"] not in seen_open]
        seen_open |= {r["id"] for r in open_runs}
        checks = {
            "exit 130 in one line": (stopped.rc == 130 and stopped.one_line(),
                                     f"exit {stopped.rc}, \"{stopped.last(70)}\""),
            "no trial RUNNING": (not [t for t in trials if t.state.name == "RUNNING"], ""),
            "no MLflow run RUNNING": (not open_runs, ", ".join(
                f"{r['role']} run of trial {r['trial']}" for r in open_runs)),
            "every COMPLETE trial has its derived point": (not derived_complete(trials),
                                                           f"trials {derived_complete(trials)}"),
        }
        if not all(ok for ok, _ in checks.values()):
            row.details.setdefault("stderr", {})[attempt + 1] = stopped.err[-2000:]
        for what, (ok, detail) in checks.items():
            if not ok:
                faults.setdefault(what, []).append(
                    f"try {attempt + 1}, {moment.replace('0-2.5 s', f'+{delay:.2f} s')}"
                    f"{': ' + detail if detail else ''}")
    resumed = cli("search", space, "--workdir", workdir, "--trials", 1, "--quiet", cwd=ws,
                  timeout=240)
    row.counted(before, completed(load_trials(study_url(workdir))))
    row.expect(resumed.rc == 0, f"the last resume exits 0 (got {resumed.rc}: {resumed.last()})")
    for what, where in faults.items():
        row.unmet.append(f"{what}: broken in {len(where)} of {tries} tries ({'; '.join(where)})")
    row.details.update(faults=faults)
    row.observed = (f"{tries} interrupts; " + ("every check held" if not faults else "; ".join(
        f"{what}: broken in {len(where)} of {tries}" for what, where in faults.items())))


# ---- bad trials ----------------------------------------------------------------------------------


def bad_trial(ctx: Context, row: Row, mode: str, reason_has: str) -> None:
    ws = ctx.folder(row.name)
    space, workdir = faulty_space(ws, row.name, mode), ws / "run"
    done = cli("search", space, "--workdir", workdir, "--quiet", cwd=ws,
               env=child_env(RELIABILITY_FAULT_DIR=str(ws)), timeout=240)
    trials = trained(load_trials(study_url(workdir)))
    failed = [t for t in trials if t.state.name == "FAIL"]
    ok = [t for t in trials if t.state.name == "COMPLETE"]
    reasons = [str(t.user_attrs.get(ERROR, "")) for t in failed]
    row.expect(done.rc == 0, f"exit 0 (got {done.rc}: {done.last()})")
    row.expect(not done.traceback, "no traceback")
    row.expect(len(failed) == 1 and reason_has.lower() in reasons[0].lower(),
               f"one trial FAIL with a reason naming {reason_has!r}")
    row.expect(len(ok) == len(trials) - 1 == 2, "the 2 other trials COMPLETE (the search went on)")
    runs = mlflow_runs(mlflow_url(workdir))
    failed_runs = [r for r in runs if r["role"] == "trial" and r["status"] == "FAILED"]
    row.expect(len(failed_runs) == 1 and failed_runs[0]["error"], "its MLflow run FAILED with "
                                                                 "condsearch.error")
    # Resume: the completed trials stay as they were.
    before = completed(load_trials(study_url(workdir)))
    again = cli("search", space, "--workdir", workdir, "--trials", 1, "--quiet", cwd=ws,
                env=child_env(RELIABILITY_FAULT_DIR=str(ws)), timeout=240)
    row.expect(again.rc == 0, f"resume exits 0 (got {again.rc})")
    row.counted(before, completed(load_trials(study_url(workdir))))
    row.observed = (f"exit {done.rc}; trials {[f'{t.number}:{t.state.name}' for t in trials]}; "
                    f"reason: \"{short(reasons[0], 110) if reasons else '-'}\"; MLflow trial runs "
                    f"{statuses(runs, 'trial')}")


@scenario("nan_trial", "NaN trial",
          "a user backbone whose first trained model returns NaN logits (3 trials); then the "
          "same command with --trials 1",
          "exit 0; that trial FAIL with a reason naming the NaN loss, its MLflow run FAILED; the "
          "other 2 COMPLETE and kept by the resume")
def nan_trial(ctx: Context, row: Row) -> None:
    bad_trial(ctx, row, "nan", "nan")


@scenario("crashing_trial", "crashing trial",
          "a user backbone (`module:function`) whose factory raises on its first call (3 "
          "trials); then the same command with --trials 1",
          "exit 0; that trial FAIL with the factory's error as reason, its MLflow run FAILED; "
          "the other 2 COMPLETE and kept by the resume")
def crashing_trial(ctx: Context, row: Row) -> None:
    bad_trial(ctx, row, "raise", "injected crash")


@scenario("hung_trial", "hung trial",
          "a user backbone whose first trained model never returns from forward "
          "(`while True: sleep(0.05)`), `search.trial_timeout: 3`, 2 trials",
          "exit 0 within ~30 s; the hung trial FAIL with a timeout reason; the next trial "
          "COMPLETE", depends_on="search.trial_timeout")
def hung_trial(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    space, workdir = faulty_space(ws, row.name, "hang"), ws / "run"
    done = cli("search", space, "--workdir", workdir, "--trials", 2, "--quiet",
               "--set", "search.trial_timeout=3", cwd=ws,
               env=child_env(RELIABILITY_FAULT_DIR=str(ws)), timeout=45 if ctx.quick else 90)
    trials = trained(load_trials(study_url(workdir)))
    states = [f"{t.number}:{t.state.name}" for t in trials]
    reasons = [str(t.user_attrs.get(ERROR, "")) for t in trials if t.state.name == "FAIL"]
    row.expect(not done.killed, f"the search ends by itself ({done.killed})")
    row.expect(done.rc == 0, f"exit 0 (got {done.rc}: {done.last()})")
    row.expect(len(reasons) == 1 and ("timeout" in reasons[0].lower()
                                      or "timed out" in reasons[0].lower()),
               "the hung trial FAIL with a timeout reason")
    row.expect(sum(t.state.name == "COMPLETE" for t in trials) == 1, "the next trial COMPLETE")
    row.expect(done.seconds < 30, f"done within 30 s (took {done.seconds:.0f} s)")
    row.nothing_to_lose()
    row.observed = (f"exit {done.rc} after {done.seconds:.0f} s"
                    f"{' (' + done.killed + ')' if done.killed else ''}; trials {states}; "
                    f"reason: \"{short(reasons[0], 100) if reasons else '-'}\"; "
                    f"stderr: \"{done.last(120)}\"")


# ---- MLflow outages ------------------------------------------------------------------------------


class MlflowServer:
    """A real `mlflow server` on loopback in a process group of its own."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / "mlflow-server.log", "w")
        self.proc = subprocess.Popen(
            [PY, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", sqlite_url(folder / "server.db"),
             "--artifacts-destination", str(folder / "server-artifacts"), "--workers", "1"],
            stdout=self.log, stderr=self.log, start_new_session=True, env=child_env())

    def wait_healthy(self, timeout: float = 120) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("the MLflow server exited")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(healthy, timeout, "the MLflow server did not answer", poll=0.3)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()


# MLflow's HTTP client retries a dead server for minutes by default; these keep a row short.
FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}


@scenario("mlflow_server_killed", "MLflow outage mid-search",
          "a real `mlflow server` as --tracking-uri, SIGKILLed once 1 trial completed and "
          "another trains (4 trials; MLflow's HTTP retries cut to 1)",
          "exit 0 without a traceback; all 4 trials COMPLETE in the study (tracking skipped "
          "with warnings); the completed ones kept")
def mlflow_server_killed(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    server = MlflowServer(ws)
    try:
        server.wait_healthy()
        space, workdir = tiny_space(ws, "outage", epochs=ctx.slow_epochs, limit=600,
                                    depth=2), ws / "run"
        env = child_env(**FAST_HTTP)
        search = Spawned(condsearch("search", space, "--workdir", workdir, "--trials", 4,
                                    "--tracking-uri", server.uri, "--quiet"), ws, env, "search")

        def ready() -> bool:
            if not search.alive():
                raise RuntimeError(f"the search ended early: {search.finish(5).last(400)}")
            states = trial_states(workdir / "study.db")
            return count(states, "COMPLETE") >= 1 and count(states, "RUNNING") > 0

        wait_for(ready, 240, "no completed trial and a running one")
        before = completed(load_trials(study_url(workdir)))
        server.kill()
        done = search.finish(300)
    finally:
        server.kill()
    trials = load_trials(study_url(workdir))
    after = completed(trials)
    row.counted(before, after)
    states = [t.state.name for t in trained(trials)]
    warnings = sum("TrackingUnavailable" in line for line in done.lines())
    row.expect(done.rc == 0, f"exit 0 (got {done.rc}: {done.last()})")
    row.expect(not done.traceback, "no traceback")
    row.expect(states.count("COMPLETE") == 4, f"4 trials COMPLETE (got {states})")
    row.details.update(stderr_tail=done.err[-3000:])
    ending = (f"a traceback: \"{done.last(120)}\"" if done.traceback
              else f"{warnings} TrackingUnavailable warnings, no traceback")
    row.observed = f"exit {done.rc} after {done.seconds:.0f} s; trials {states}; {ending}"


@scenario("mlflow_down_at_start", "MLflow down at start",
          "--tracking-uri http://127.0.0.1:PORT where nothing listens, a new search of 2 trials "
          "(MLflow's HTTP retries cut to 1)",
          "either exit 2 with one line naming the server and nothing recorded, or exit 0 with "
          "both trials COMPLETE (tracking skipped with a warning); no traceback")
def mlflow_down_at_start(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    space, workdir = tiny_space(ws, "down"), ws / "run"
    uri = f"http://127.0.0.1:{free_port()}"
    done = cli("search", space, "--workdir", workdir, "--tracking-uri", uri, "--quiet", cwd=ws,
               env=child_env(**FAST_HTTP), timeout=240)
    trials = trained(load_trials(study_url(workdir)))
    states = [t.state.name for t in trials]
    row.expect(not done.traceback, "no traceback")
    if done.rc == 2:
        row.expect(done.one_line(), f"one line (got {len(done.lines())})")
        row.expect(not trials, "no trial recorded")
    else:
        row.expect(done.rc == 0, f"exit 0 or 2 (got {done.rc}: {done.last()})")
        row.expect(states.count("COMPLETE") == 2, f"both trials COMPLETE (got {states})")
    row.nothing_to_lose()
    row.observed = (f"exit {done.rc} after {done.seconds:.0f} s; trials {states}; "
                    f"{len(done.lines())} stderr line(s), last: \"{done.last(140)}\"")


# ---- Ray -----------------------------------------------------------------------------------------

RAY_SPACE = """\
name: NAME
task: {dataset: digits, train_limit: 600}
model:
  backbone: token_transformer
  dim: {choice: [16, 24]}
  depth: 2
  heads: 2
  patch_size: 4
  components:
    early_exit: {enabled: true}
train: {epochs: EPOCHS, batch_size: 32, eval_batch_size: 256}
sampler: random
sweep: {early_exit.threshold: [0.6]}
search: {trials: 2, concurrency: 2, cpus_per_trial: 1, max_retries: 2}
"""


class RayHead:
    """`ray start --head` on 127.0.0.1 with 2 CPUs, its temporary folder our own, so its
    processes (and only they) are found by that folder and stopped by pid."""

    def __init__(self, timeout: float) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="relray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**child_env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
        self.started = subprocess.run(
            [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
             str(self.port), "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
             "--disable-usage-stats", "--temp-dir", str(self.temp)],
            env=self.env, capture_output=True, text=True, timeout=timeout)

    def own_pids(self) -> set[int]:
        table = process_table()
        roots = {pid for pid, (_, cmd) in table.items() if str(self.temp) in cmd}
        return descendants(roots, table) - {os.getpid()}

    def workers(self) -> list[int]:
        """Our cluster's processes running a trial."""
        table = process_table()
        return [pid for pid in self.own_pids()
                if table.get(pid, (0, ""))[1].startswith("ray::ImplicitFunc")]

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.own_pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)
        shutil.rmtree(self.temp, ignore_errors=True)


@scenario("ray_worker_kill", "Ray worker killed mid-trial",
          "SIGKILL to a Ray worker (`ray::ImplicitFunc`) while both trials train on a local "
          "`ray start --head` (2 CPUs, max_retries 2)",
          "exit 0; both trials COMPLETE (the killed one retried); no trial RUNNING; the killed "
          "attempt's MLflow run KILLED")
def ray_worker_kill(ctx: Context, row: Row) -> None:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        row.skipped = "Ray Tune is not installed (pip install 'condsearch[ray]')"
        return
    ws = ctx.folder(row.name)
    try:
        head = RayHead(timeout=120)
    except subprocess.TimeoutExpired:
        row.skipped = "`ray start --head` did not finish within 120 s"
        return
    try:
        if head.started.returncode != 0:
            row.skipped = f"`ray start --head` failed: {short(head.started.stderr, 200)}"
            return
        space = ws / "ray.yaml"
        space.write_text(RAY_SPACE.replace("NAME", "ray_killed")
                         .replace("EPOCHS", str(ctx.slow_epochs + 2)))
        workdir = ws / "run"
        search = Spawned(condsearch("search", space, "--backend", "ray", "--address",
                                    head.address, "--workdir", workdir, "--quiet"), ws,
                         head.env, "search")

        def training() -> bool:
            """Every worker of ours holds a trial whose MLflow run has started."""
            if not search.alive():
                raise RuntimeError(f"the search ended early: {search.finish(5).last(400)}")
            workers = head.workers()
            if not workers or not (workdir / "mlflow.db").exists():
                return False
            runs = mlflow_runs(mlflow_url(workdir))
            started = sum(r["role"] == "trial" and r["status"] == "RUNNING" for r in runs)
            return started >= len(workers)

        wait_for(training, 300, "no trial training on a Ray worker", poll=1.0)
        time.sleep(1)  # into the trial's training
        victims = head.workers()
        before = completed(load_trials(study_url(workdir)))
        row.expect(victims, "a worker to kill (the trials finished first)")
        if victims:
            os.kill(victims[0], signal.SIGKILL)
        done = search.finish(400)
        trials = load_trials(study_url(workdir))
        row.counted(before, completed(trials))
        states = [t.state.name for t in trained(trials)]
        runs = mlflow_runs(mlflow_url(workdir))
        row.expect(done.rc == 0, f"exit 0 (got {done.rc}: {done.last()})")
        row.expect(states.count("COMPLETE") == 2, f"both trials COMPLETE (got {states})")
        row.expect("RUNNING" not in [t.state.name for t in trials], "no trial RUNNING")
        row.expect(statuses(runs, "trial").get("KILLED"), "the killed attempt's run KILLED")
        row.observed = (f"killed worker pid {victims[0] if victims else '-'}; exit {done.rc} "
                        f"after {done.seconds:.0f} s; trials {states}; MLflow trial runs "
                        f"{statuses(runs, 'trial')}")
    finally:
        head.stop()


# ---- several drivers -----------------------------------------------------------------------------


@scenario("three_drivers", "three drivers, one study",
          "3 `condsearch search` processes on one SQLite --storage, each its own workdir, "
          "started 2 s apart (heartbeat 1 s, grace 6 s)",
          "all exit 0; every trial COMPLETE, none failed by another driver; every trial run an "
          "MLflow store shows FINISHED is COMPLETE in the study")
def three_drivers(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    space = tiny_space(ws, "shared")
    url, per_driver = sqlite_url(ws / "shared.db"), 1 if ctx.quick else 2
    env = child_env(CONDSEARCH_GRACE_S="6")
    drivers = []
    for i in range(3):
        if i:
            time.sleep(2)
        drivers.append(Spawned(condsearch("search", space, "--storage", url, "--workdir",
                                          ws / f"w{i}", "--trials", per_driver, "--seed",
                                          11 * (i + 1), "--quiet"), ws, env, f"driver{i}"))
    dones = [d.finish(400) for d in drivers]
    trials = load_trials(url)
    by_run = {t.user_attrs.get(RUN_ID): t for t in trained(trials)}
    finished = [r for i in range(3) for r in mlflow_runs(mlflow_url(ws / f"w{i}"))
                if r["role"] == "trial" and r["status"] == "FINISHED"]
    # what the drivers finished: a FINISHED trial run whose trial is not COMPLETE is lost
    missing = [r["id"] for r in finished if r["id"] not in by_run
               or by_run[r["id"]].state.name != "COMPLETE"]
    row.completed_before = len(finished)
    row.completed_after = sum(t.state.name == "COMPLETE" for t in trained(trials))
    row.lost = len(missing)
    failed = [t.number for t in trials if ERROR in t.user_attrs or t.state.name == "FAIL"]
    row.expect([d.rc for d in dones] == [0, 0, 0], f"all exit 0 (got {[d.rc for d in dones]})")
    row.expect(not any(d.traceback for d in dones), "no traceback")
    row.expect(row.completed_after == 3 * per_driver,
               f"{3 * per_driver} trained trials COMPLETE (got {row.completed_after})")
    row.expect(not failed, f"no trial failed (trials {failed} did)")
    row.details.update(completed_with_derived=len(completed(trials)))
    row.observed = (f"exits {[d.rc for d in dones]}; {row.completed_after} trained trials "
                    f"COMPLETE of {len(trained(trials))}; failed: {failed or 'none'}; "
                    f"{len(finished)} FINISHED trial runs across the 3 stores")


# ---- exports -------------------------------------------------------------------------------------


def export_base(ctx: Context, out: Path, cwd: Path) -> Done:
    return cli("export", "--workdir", ctx.base(), "--pick", "max-accuracy", "--out", out, cwd=cwd,
               timeout=240)


LOAD = """\
import sys
from condsearch.export import ExportError, evaluate_exported, load_exported
for call in (load_exported, evaluate_exported):
    try:
        call(sys.argv[1])
    except ExportError as exc:
        print(f"{call.__name__}: {exc}", file=sys.stderr)
    else:
        print(f"{call.__name__}: accepted", file=sys.stderr)
"""


@scenario("export_edited", "edited export",
          "architecture.yaml of a real export changed (model.dim 16 → 32) after export; then "
          "`condsearch evaluate` where it exists, load_exported and evaluate_exported",
          "each refuses in one line naming architecture.yaml (its sha256 changed)")
def export_edited(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    out = ws / "exported"
    made = export_base(ctx, out, ws)
    if not row.expect(made.rc == 0, f"the export succeeds (got {made.rc}: {made.last()})"):
        return
    arch_file = out / "architecture.yaml"
    arch = yaml.safe_load(arch_file.read_text())
    arch["model"]["dim"] = 32
    arch_file.write_text(yaml.safe_dump(arch, sort_keys=False))
    cli_eval = cli("evaluate", out, cwd=ws, timeout=120)
    has_cli = not (cli_eval.rc == 2 and "No such command" in cli_eval.err)
    if has_cli:
        line = cli_eval.one_line()
        row.expect(cli_eval.rc == 2 and line and "architecture.yaml" in line,
                   f"`condsearch evaluate` exits 2 in one line naming architecture.yaml "
                   f"(got {cli_eval.rc}: {cli_eval.last()})")
    api = run_cmd([PY, "-c", LOAD, str(out)], ws, timeout=120)
    verdicts = api.lines()
    row.expect(len(verdicts) == 2 and all("architecture.yaml" in v and "sha256" in v
                                          for v in verdicts),
               "load_exported and evaluate_exported refuse, naming architecture.yaml's sha256")
    row.nothing_to_lose()
    row.observed = ((f"`condsearch evaluate`: exit {cli_eval.rc}, \"{cli_eval.last(100)}\"; "
                     if has_cli else "no `condsearch evaluate` command; ")
                    + "; ".join(short(v, 110) for v in verdicts))


@scenario("export_killed", "export killed mid-write",
          "SIGKILL to `condsearch export` as soon as a file is in its staging folder "
          "(`.OUT.partial-*`), both into a new --out and over a previous export; then the "
          "export again",
          "--out is never a partial export: absent or the previous one, readable whole; the "
          "rerun exits 0 and its export loads")
def export_killed(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    caught, notes = 0, []
    for case in ("new", "over"):
        folder = ws / case
        folder.mkdir()
        out = folder / "exported"
        if case == "over":
            first = export_base(ctx, out, folder)
            row.expect(first.rc == 0, f"the first export succeeds (got {first.rc})")
        previous = snapshot(out) if out.exists() else None
        for attempt in range(4):
            # Killed once a file is in the staging folder (the last try: once it exists).
            proc = Spawned(condsearch("export", "--workdir", ctx.base(), "--pick",
                                      "max-accuracy", "--out", out), folder,
                           child_env(), "export")
            hit = False
            while proc.alive():
                staging = [p for p in folder.iterdir() if ".partial-" in p.name]
                if staging and (attempt == 3 or any(f.is_file() for p in staging
                                                    for f in p.rglob("*"))):
                    proc.signal(signal.SIGKILL)
                    hit = True
                    break
                time.sleep(0.002)
            proc.finish(60)
            if hit:
                staged = sorted(f.name for p in folder.iterdir() if ".partial-" in p.name
                                for f in p.rglob("*") if f.is_file())
                break
        if not hit:
            notes.append(f"{case}: never caught mid-write in 4 tries")
            continue
        caught += 1
        leftovers = [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]
        now = snapshot(out) if out.exists() else None
        if previous is None:
            intact = now is None or readable(out, ws)
        else:
            intact = now == previous
        row.expect(intact, f"{case}: --out absent or the previous export, whole")
        rerun = export_base(ctx, out, folder)
        row.expect(rerun.rc == 0 and readable(out, ws), f"{case}: the rerun exits 0 and loads")
        after = [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]
        notes.append(f"{case}: killed with {staged or 'no file'} staged; --out "
                     f"{'unchanged' if now == previous else 'changed'}; {len(leftovers)} staging "
                     f"folder(s) left beside it, {len(after)} after the rerun (exit {rerun.rc})")
    if not caught:
        row.skipped = "the export finished before its staging folder could be seen; " + \
            "; ".join(notes)
    row.nothing_to_lose()
    row.observed = "; ".join(notes)


def readable(out: Path, cwd: Path) -> bool:
    check = run_cmd([PY, "-c", "import sys; from condsearch.export import read_export; "
                     "read_export(sys.argv[1])", str(out)], cwd, timeout=120)
    return check.rc == 0


# ---- hostile input -------------------------------------------------------------------------------


@scenario("yaml_alias_bomb", "hostile YAML",
          "`condsearch validate` on a 9-level billion-laughs file (< 1 KB, 387 M values expanded)",
          "exit 2 with one line, in under 1 s, child peak RSS under 100 MB")
def yaml_alias_bomb(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    path = ws / "laughs.yaml"
    path.write_text(laughs())
    done = cli("validate", path, cwd=ws, timeout=60, rss_mb=2048)
    row.expect(done.rc == 2, f"exit 2 (got {done.rc})")
    row.expect(done.one_line(), f"one line (got {len(done.lines())})")
    row.expect(done.seconds < 1.0, f"under 1 s (took {done.seconds:.2f} s)")
    row.expect(done.peak_mb < 100, f"peak under 100 MB ({done.peak_mb:.0f} MB)")
    row.nothing_to_lose()
    row.details.update(seconds=done.seconds, peak_mb=done.peak_mb)
    row.observed = (f"exit {done.rc} in {done.seconds:.2f} s, peak {done.peak_mb:.0f} MB: "
                    f"\"{done.last(110)}\"")


def sweep_bomb() -> list[str]:
    values = ", ".join(f"{0.05 + 0.9 * i / 299:.5f}" for i in range(300))
    return ["--set", "model.components.moe={enabled: true, every: 1}",
            "--set", "model.components.token_selection={enabled: true}",
            "--set", f"sweep={{early_exit.threshold: [{values}], moe.eval_capacity_factor: "
                     f"[{values}], token_selection.keep_ratio: [{values}]}}"]


BOMBS: dict[str, tuple[str, list[str]]] = {
    "bomb_dim": ("model.dim 20000", ["--set", "model.dim=20000"]),
    "bomb_mlp_ratio": ("model.mlp_ratio 1e6", ["--set", "model.mlp_ratio=1000000"]),
    "bomb_experts": ("moe.experts 1e6 (MoE in every layer)",
                     ["--set", "model.components.moe={enabled: true, experts: 1000000, every: 1}"]),
    "bomb_depth": ("model.depth 1e5", ["--set", "model.depth=100000"]),
    "bomb_epochs": ("train.epochs 1e9", ["--set", "train.epochs=1000000000"]),
    "bomb_sweep": ("a sweep of 3 knobs × 300 values (27 M settings a trial)", sweep_bomb()),
}
#: a refused bomb's peak, and a failed trial's time, must stay under these
BOMB_PEAK_MB, BOMB_SECONDS = 2048, 30.0


def resource_bomb(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    space = ws / "bomb.yaml"
    space.write_text(BOMB)
    sets = BOMBS[row.name][1]
    checked = cli("validate", space, *sets, cwd=ws, timeout=60, rss_mb=4096)
    row.nothing_to_lose()
    row.details.update(validate_seconds=checked.seconds, validate_peak_mb=checked.peak_mb)
    if checked.rc == 2:
        line = checked.one_line()
        row.expect(line, f"one line (got {len(checked.lines())})")
        row.expect(checked.peak_mb < BOMB_PEAK_MB, f"peak under {BOMB_PEAK_MB} MB")
        row.observed = (f"validate: exit 2 in {checked.seconds:.2f} s, peak "
                        f"{checked.peak_mb:.0f} MB: \"{short(checked.last(), 150)}\"")
        return
    row.expect(checked.rc == 0, f"validate exits 0 or 2 (got {checked.rc}: {checked.last()})")
    # Accepted: the search must fail the trial quickly, in bounded memory (the harness kills it
    # past 4 GB or 45 s, so a miss cannot take the machine down).
    workdir = ws / "run"
    done = cli("search", space, *sets, "--workdir", workdir, "--trials", 1, "--quiet", cwd=ws,
               timeout=45, rss_mb=4096)
    trials = trained(load_trials(study_url(workdir)))
    states = [t.state.name for t in trials]
    reason = next((str(t.user_attrs.get(ERROR, "")) for t in trials if t.state.name == "FAIL"), "")
    row.expect(not done.killed, done.killed or "")
    if done.rc == 2:
        row.expect(done.one_line(), "search refuses in one line")
    else:
        row.expect(done.rc == 0 and states == ["FAIL"], f"the trial FAIL (got exit {done.rc}, "
                                                        f"trials {states})")
        row.expect(done.seconds < BOMB_SECONDS, f"within {BOMB_SECONDS:.0f} s")
    row.expect(done.peak_mb < BOMB_PEAK_MB, f"peak under {BOMB_PEAK_MB} MB")
    row.details.update(search_seconds=done.seconds, search_peak_mb=done.peak_mb)
    row.observed = (f"validate accepted it (exit {checked.rc}); search: exit {done.rc} after "
                    f"{done.seconds:.0f} s, peak {done.peak_mb:.0f} MB"
                    f"{', ' + done.killed if done.killed else ''}; trials {states or 'none'}"
                    f"{'; reason: ' + short(reason, 100) if reason else ''}")


for _name, (_what, _sets) in BOMBS.items():
    scenario(_name, f"resource bomb: {_what}",
             f"`condsearch validate` then, if accepted, `condsearch search --trials 1` with "
             f"{_what}",
             f"refused by validate (exit 2, one line), or the trial FAIL within "
             f"{BOMB_SECONDS:.0f} s; child peak RSS under {BOMB_PEAK_MB // 1024} GB",
             depends_on="search.max_memory_gb and the space's size checks")(resource_bomb)


# ---- workdirs and their files --------------------------------------------------------------------


def old_format(workdir: Path) -> None:
    """Rewrite `condsearch.json` as written before the `{workdir}` form: absolute paths, no
    "format"."""
    state_file = workdir / "condsearch.json"
    state = json.loads(state_file.read_text())
    state.pop("format", None)
    state["storage"] = sqlite_url(workdir.resolve() / "study.db")
    state["tracking_uri"] = sqlite_url(workdir.resolve() / "mlflow.db")
    state_file.write_text(json.dumps(state, indent=2) + "\n")


def copied(ctx: Context, row: Row, old: bool) -> None:
    ws = ctx.folder(row.name)
    original = ctx.clone(ws / "original")
    if old:
        old_format(original)
    copy = Path(shutil.copytree(original, ws / "copy"))
    before_files = snapshot(original)
    before = completed(load_trials(study_url(copy)))
    done = cli("search", ctx.base_space(), "--workdir", copy, "--trials", 1,
               "--quiet", cwd=ws, timeout=240)
    touched = changed(before_files, snapshot(original))
    after = completed(load_trials(study_url(copy)))
    row.counted(before, after)
    new = len(trained([t for t in load_trials(study_url(copy)) if t.state.name == "COMPLETE"]))
    kept = len(trained([t for t in load_trials(study_url(original))
                        if t.state.name == "COMPLETE"]))
    runs = mlflow_runs(mlflow_url(copy))
    row.expect(done.rc == 0, f"exit 0 (got {done.rc}: {done.last()})")
    row.expect(not touched, f"the original's files unchanged (changed: {touched})")
    row.expect(new == kept + 1, "the copy's study gains 1 trial")
    row.expect(statuses(runs, "trial").get("FINISHED", 0) == kept + 1,
               "the copy's own mlflow.db gains the trial's run")
    row.observed = (f"exit {done.rc}; original's files changed: {touched or 'none'}; trained "
                    f"trials COMPLETE: copy {new}, original {kept}; copy's MLflow trial runs "
                    f"{statuses(runs, 'trial')}")


@scenario("copied_workdir", "copied workdir",
          "`cp -r` of a finished search's workdir, then `search --trials 1` in the copy",
          "exit 0; the copy's own study and mlflow.db gain the trial; the original's files "
          "unchanged", depends_on="relocatable workdirs")
def copied_workdir(ctx: Context, row: Row) -> None:
    copied(ctx, row, old=False)


@scenario("copied_old_workdir", "copied workdir, old condsearch.json",
          "as above, the original's condsearch.json in the form written before `{workdir}` "
          "(absolute paths, no \"format\")",
          "exit 0; the copy's own study and mlflow.db gain the trial; the original's files "
          "unchanged", depends_on="relocatable workdirs")
def copied_old_workdir(ctx: Context, row: Row) -> None:
    copied(ctx, row, old=True)


@scenario("moved_workdir", "moved workdir",
          "`mv` of a finished search's workdir, then `search --trials 1` in its new place",
          "exit 0; the moved study gains the trial; nothing is created at the old path",
          depends_on="relocatable workdirs")
def moved_workdir(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    original = ctx.clone(ws / "original")
    before = completed(load_trials(study_url(original)))
    moved = Path(shutil.move(str(original), str(ws / "moved")))
    done = cli("search", ctx.base_space(), "--workdir", moved, "--trials", 1,
               "--quiet", cwd=ws, timeout=240)
    trials = load_trials(study_url(moved))
    row.counted(before, completed(trials))
    new = len(trained([t for t in trials if t.state.name == "COMPLETE"]))
    row.expect(done.rc == 0, f"exit 0 (got {done.rc}: {done.last()})")
    row.expect(not original.exists(), "nothing created at the old path")
    row.expect(new == len(trained(load_trials(study_url(ctx.base())))) + 1,
               "the moved study gains 1 trial")
    row.observed = (f"exit {done.rc}: \"{done.last(110)}\"; old path "
                    f"{'re-created: ' + str(sorted(p.name for p in original.iterdir())) if original.exists() else 'absent'}"
                    f"; trained trials COMPLETE in the moved study: {new}")


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00this is not what it should be\xff" * 64)


def foreign_db(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('my own data')")


#: name -> (fault, the file, what replaces it, how)
CORRUPTIONS: dict[str, tuple[str, str, str, Callable[[Path], None]]] = {
    "corrupt_study_db": ("corrupt study.db", "study.db", "garbage bytes", garbage),
    "empty_study_db": ("empty study.db", "study.db", "an empty file",
                       lambda p: p.write_bytes(b"")),
    "foreign_study_db": ("foreign study.db", "study.db", "another program's SQLite database",
                         foreign_db),
    "corrupt_mlflow_db": ("corrupt mlflow.db", "mlflow.db", "garbage bytes", garbage),
    "corrupt_state_json": ("corrupt condsearch.json", "condsearch.json",
                           "its first 40 characters", lambda p: p.write_text(p.read_text()[:40])),
}


def corrupt_file(ctx: Context, row: Row) -> None:
    _, name, _, damage = CORRUPTIONS[row.name]
    ws = ctx.folder(row.name)
    workdir = ctx.clone(ws / "run")
    intact = completed(load_trials(study_url(workdir))) if name != "study.db" else {}
    damage(workdir / name)
    before_files = snapshot(workdir)
    done = cli("search", ctx.base_space(), "--workdir", workdir, "--trials", 1,
               "--quiet", cwd=ws, timeout=240)
    touched = changed(before_files, snapshot(workdir))
    line = done.one_line()
    row.expect(done.rc == 2, f"exit 2 (got {done.rc})")
    row.expect(line, f"one line, no traceback (got {len(done.lines())} lines"
                     f"{', a traceback' if done.traceback else ''})")
    row.expect(not touched, f"files unchanged (changed: {touched})")
    row.counted(intact, completed(load_trials(study_url(workdir))) if intact else {})
    row.observed = (f"exit {done.rc}, {len(done.lines())} line(s){' with a traceback' if done.traceback else ''}: "
                    f"\"{done.last(130)}\"; files changed: {touched or 'none'}")


for _name, (_what, _file, _how, _) in CORRUPTIONS.items():
    scenario(_name, _what, f"{_file} of a finished search replaced by {_how}; then "
             "`search --trials 1`",
             "exit 2 with one line naming the file, no traceback; every file unchanged",
             depends_on="checks of a workdir's files")(corrupt_file)


@scenario("new_study", "study.db deleted; --new-study",
          "a finished search's study.db deleted; `search --trials 1` without `--new-study`, "
          "then with it, then with it again",
          "without: exit 2, one line naming --new-study, files unchanged; with: exit 0, the new "
          "study's trial COMPLETE, the earlier trials' MLflow runs kept; again: exit 2 in one "
          "line (the study is there) and the study unchanged", depends_on="--new-study")
def new_study(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    workdir = ctx.clone(ws / "run")
    earlier = {r["id"]: r["status"] for r in mlflow_runs(mlflow_url(workdir))
               if r["role"] == "trial"}
    (workdir / "study.db").unlink()
    files = snapshot(workdir)
    plain = cli("search", ctx.base_space(), "--workdir", workdir, "--trials", 1, "--quiet",
                cwd=ws, timeout=240)
    touched = changed(files, snapshot(workdir))
    line = plain.one_line() or ""
    row.expect(plain.rc == 2 and "--new-study" in line,
               f"without --new-study: exit 2 in one line naming --new-study (got {plain.rc}: "
               f"{plain.last()})")
    row.expect(not touched, f"files unchanged by the refused resume (changed: {touched})")
    fresh = cli("search", ctx.base_space(), "--workdir", workdir, "--trials", 1, "--new-study",
                "--quiet", cwd=ws, timeout=240)
    trials = load_trials(study_url(workdir))
    states = [t.state.name for t in trained(trials)]
    row.expect(fresh.rc == 0, f"with --new-study: exit 0 (got {fresh.rc}: {fresh.last()})")
    row.expect(states == ["COMPLETE"], f"the new study's one trial COMPLETE (got {states})")
    later = {r["id"]: r["status"] for r in mlflow_runs(mlflow_url(workdir))
             if r["role"] == "trial"}
    row.counted(earlier, later)  # the earlier trials' record now lives in MLflow alone
    again = cli("search", ctx.base_space(), "--workdir", workdir, "--trials", 1, "--new-study",
                "--quiet", cwd=ws, timeout=240)
    row.expect(again.rc == 2 and again.one_line(),
               f"--new-study again: exit 2 in one line (got {again.rc}: {again.last()})")
    row.expect(completed(load_trials(study_url(workdir))) == completed(trials),
               "--new-study again leaves the study as it was")
    row.observed = (f"without: exit {plain.rc} \"{short(line or plain.last(), 90)}\"; with: exit "
                    f"{fresh.rc}, trials {states}, earlier trial runs kept "
                    f"{sum(later.get(k) == v for k, v in earlier.items())} of {len(earlier)}; "
                    f"again: exit {again.rc} \"{again.last(80)}\"")


@scenario("new_study_over_corrupt", "--new-study over a corrupt study.db",
          "study.db replaced by garbage bytes, then `search --trials 1 --new-study`",
          "exit 2 with one line; every file unchanged (a damaged workdir is refused, never "
          "repaired over)", depends_on="--new-study")
def new_study_over_corrupt(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    workdir = ctx.clone(ws / "run")
    garbage(workdir / "study.db")
    files = snapshot(workdir)
    done = cli("search", ctx.base_space(), "--workdir", workdir, "--trials", 1, "--new-study",
               "--quiet", cwd=ws, timeout=240)
    touched = changed(files, snapshot(workdir))
    row.expect(done.rc == 2 and done.one_line(), f"exit 2 in one line (got {done.rc}, "
                                                 f"{len(done.lines())} lines)")
    row.expect(not touched, f"files unchanged (changed: {touched})")
    row.nothing_to_lose()
    row.observed = (f"exit {done.rc}: \"{done.last(130)}\"; files changed: "
                    f"{touched or 'none'}")


# ---- a full disk ---------------------------------------------------------------------------------


DISK_WORDS = ("disk", "space", "full", "too large", "efbig", "errno 27")


def derived_complete(trials: list[Any]) -> list[int]:
    """COMPLETE trained trials missing their one derived point (the sweep's 0.6)."""
    points: dict[int, int] = {}
    for t in trials:
        if DERIVED_FROM in t.user_attrs and t.state.name == "COMPLETE":
            parent = int(t.user_attrs[DERIVED_FROM])
            points[parent] = points.get(parent, 0) + 1
    return [t.number for t in trained(trials)
            if t.state.name == "COMPLETE" and points.get(t.number, 0) != 1]


def search_on_full_disk(ctx: Context, row: Row, ws: Path, workdir: Path, space: Path,
                        extra: tuple, env: dict[str, str]) -> None:
    """Resume `workdir` for 8 trials with each file capped at study.db's size + 16 KB, then
    again without the cap; check the exit, the study's consistency and the trials kept."""
    initial = completed(load_trials(study_url(workdir)))
    limit = (workdir / "study.db").stat().st_size + 16 * 1024
    full = cli("search", space, "--workdir", workdir, "--trials", 8, "--quiet", *extra, cwd=ws,
               env=env, timeout=180, fsize=limit)
    during = load_trials(study_url(workdir))
    before = {**completed(during), **initial}
    broken = derived_complete(during)
    new = [t.number for t in trained(during) if t.state.name == "COMPLETE"
           and t.number not in initial]
    left_running = [t.number for t in during if t.state.name == "RUNNING"]
    row.expect(full.rc == 2, f"exit 2 (got {full.rc})")
    row.expect(not full.traceback, "no traceback")
    row.expect(any(word in full.last().lower() for word in DISK_WORDS),
               "its last line says the disk is full")
    row.expect(not broken, f"every COMPLETE trial has its derived point (not {broken})")
    time.sleep(3.2)  # past the resume's 2 s grace period, for a trial the full disk left RUNNING
    resumed = cli("search", space, "--workdir", workdir, "--trials", 1, "--quiet", *extra, cwd=ws,
                  env={**env, "CONDSEARCH_GRACE_S": "2"}, timeout=240)
    trials = load_trials(study_url(workdir))
    row.counted(before, completed(trials))
    row.expect(resumed.rc == 0, f"the resume exits 0 (got {resumed.rc}: {resumed.last()})")
    row.expect(not derived_complete(trials), "consistent after the resume")
    row.expect(not [t for t in trials if t.state.name == "RUNNING"], "no trial RUNNING after the "
                                                                     "resume")
    row.details.update(limit_bytes=limit, stderr_tail=full.err[-3000:], new_under_limit=new)
    row.observed = (f"exit {full.rc} after {full.seconds:.0f} s, {len(full.lines())} stderr "
                    f"line(s){' with a traceback' if full.traceback else ''}, last: "
                    f"\"{full.last(120)}\"; trials left RUNNING {left_running or 'none'}; "
                    f"missing derived points: {broken or 'none'}; {len(new)} trial(s) completed "
                    f"under the cap; resume exit {resumed.rc}")


@scenario("disk_full_at_start", "disk full at a resume's start",
          "a finished search resumed (8 trials) with every file capped at study.db's size + "
          "16 KB (RLIMIT_FSIZE, SIGXFSZ ignored: a write past it fails with EFBIG), so mlflow.db "
          "(about 1 MB) cannot grow, nor be written past the cap at all (stricter than a real "
          "full disk); then the same command without the cap",
          "exit 2, no traceback, ending with one line saying the disk is full; every COMPLETE "
          "trial has its derived point; the resume exits 0 and keeps every completed trial",
          depends_on="disk-full handling")
def disk_full_at_start(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    workdir = ctx.clone(ws / "run")
    search_on_full_disk(ctx, row, ws, workdir, ctx.base_space(), (), child_env())


@scenario("disk_full_mid_search", "disk full mid-search",
          "as above, on a search logging to MLflow's file store (small files, so the study's "
          "database is what fills: a few trials run first)",
          "exit 2, no traceback, ending with one line saying the disk is full; every COMPLETE "
          "trial has its derived point; the resume exits 0 and keeps every completed trial",
          depends_on="disk-full handling")
def disk_full_mid_search(ctx: Context, row: Row) -> None:
    ws = ctx.folder(row.name)
    space, workdir = tiny_space(ws, "full"), ws / "run"
    extra = ("--tracking-uri", f"file://{ws / 'mlruns'}")
    env = child_env(MLFLOW_ALLOW_FILE_STORE="true")
    first = cli("search", space, "--workdir", workdir, "--trials", 1, "--quiet", *extra, cwd=ws,
                env=env, timeout=240)
    if not row.expect(first.rc == 0, f"the first search exits 0 (got {first.rc}: "
                                     f"{first.last()})"):
        return
    search_on_full_disk(ctx, row, ws, workdir, space, extra, env)


# ---- running and reporting -----------------------------------------------------------------------


def run_scenario(ctx: Context, sc: Scenario) -> Row:
    row = Row(sc.name, sc.fault, sc.injected, sc.expected, sc.depends_on)
    started = time.monotonic()
    try:
        sc.run(ctx, row)
    except Exception as exc:  # noqa: BLE001 - a scenario's failure is a failed row
        row.unmet.append(f"the scenario raised {type(exc).__name__}: {short(exc, 300)}")
        row.details["traceback"] = traceback.format_exc()[-4000:]
        row.observed = (row.observed + "; " if row.observed else "") + \
            f"scenario error: {type(exc).__name__}: {short(exc, 200)}"
    finally:
        for left in list(Spawned.live):  # what a failed scenario left running
            left.signal(signal.SIGKILL)
            left.finish(30)
    row.seconds = time.monotonic() - started
    row.passed = row.skipped is None and not row.unmet and row.lost == 0
    # The scenarios' temporary folder reads as $TMP, so the table is the same from run to run.
    root = str(ctx.root)
    row.observed = row.observed.replace(root, "$TMP")
    row.unmet = [u.replace(root, "$TMP") for u in row.unmet]
    row.skipped = row.skipped.replace(root, "$TMP") if row.skipped else row.skipped
    row.details = {k: v.replace(root, "$TMP") if isinstance(v, str) else v
                   for k, v in row.details.items()}
    return row


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows: list[Row]) -> str:
    lines = ["| fault | injected | expected | observed | completed trials lost | pass |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r.skipped:
            verdict, observed, lost_cell = "skipped", f"skipped: {r.skipped}", "—"
        else:
            verdict = "yes" if r.passed else "**no**"
            observed = r.observed + (f" — **unmet:** {'; '.join(r.unmet)}" if r.unmet else "")
            lost_cell = ("?" if r.lost is None else
                         f"{r.lost} of {r.completed_before}" if r.completed_before else str(r.lost))
        lines.append(f"| {cell(r.fault)} (`{r.name}`) | {cell(r.injected)} | {cell(r.expected)} "
                     f"| {cell(observed)} | {lost_cell} | {verdict} |")
    return "\n".join(lines)


def totals(rows: list[Row]) -> dict[str, Any]:
    ran = [r for r in rows if not r.skipped]
    return {"rows": len(ran), "passed": sum(r.passed for r in ran),
            "skipped": len(rows) - len(ran),
            "trials_lost": sum(r.lost or 0 for r in ran),
            "unmeasured_lost": [r.name for r in ran if r.lost is None],
            "failed": [r.name for r in ran if not r.passed]}


def summary_line(t: dict[str, Any]) -> str:
    text = (f"**{t['passed']} of {t['rows']} rows passed**; completed trials lost in total: "
            f"**{t['trials_lost']}**")
    if t["unmeasured_lost"]:
        text += f" (not measured in {', '.join(t['unmeasured_lost'])})"
    if t["skipped"]:
        text += f"; {t['skipped']} row(s) skipped"
    return text + "."


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scenarios")
    parser.add_argument("--quick", action="store_true", help="shorter trials and waits (CI)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--out", type=Path, default=HERE, help="where README.md and JSON go")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:22s} {sc.fault}")
        return {}
    unknown = sorted(set(args.only or []) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; --list shows them")
    chosen = [SCENARIOS[n] for n in SCENARIOS if not args.only or n in args.only]
    started = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="reliability-", dir=args.keep))
    else:
        root = Path(tempfile.mkdtemp(prefix="reliability-"))
    ctx = Context(root, args.quick)
    TMP_ROOTS.append(str(root))
    rows = []
    try:
        for sc in chosen:
            row = run_scenario(ctx, sc)
            rows.append(row)
            verdict = "skip" if row.skipped else "pass" if row.passed else "FAIL"
            print(f"{verdict:4s} {row.name:22s} lost {row.lost if row.lost is not None else '?'}"
                  f"  ({row.seconds:.0f} s)  {short(row.skipped or row.observed, 200)}", flush=True)
            for what in row.unmet:
                print(f"       unmet: {short(what, 200)}", flush=True)
    finally:
        for left in list(Spawned.live):  # after Ctrl-C of this script
            left.signal(signal.SIGKILL)
            left.finish(30)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    sums = totals(rows)
    command = "python experiments/reliability/run.py " + " ".join(argv if argv is not None
                                                                  else sys.argv[1:])
    settings = {"command": command.strip(), "quick": args.quick, "only": args.only,
                "seconds": time.perf_counter() - started, "machine": machine()}
    text = f"{table(rows)}\n\n{summary_line(sums)}"
    payload = {"totals": sums, "rows": [asdict(r) for r in rows]}
    write_results(args.out, "Reliability: the fault suite", payload, settings, text)
    print(summary_line(sums).replace("**", ""))
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
