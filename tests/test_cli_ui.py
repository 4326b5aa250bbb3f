"""`condsearch ui`: the MLflow server it starts listens on 127.0.0.1 only, whatever the
environment asks, and a signal to the CLI stops the server and every process it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port

from condsearch.cli import ui_command, ui_environment
from condsearch.orchestrate import read_workdir

# What someone's shell might hold for their own MLflow server: each would add a non-loopback
# listener (or move the one `ui` prints) if the server saw it.
WIDE_OPEN = {
    "MLFLOW_HOST": "0.0.0.0",
    "MLFLOW_UVICORN_OPTS": "--host 0.0.0.0",
    "UVICORN_HOST": "0.0.0.0",
    "GUNICORN_CMD_ARGS": "-b 0.0.0.0:{other}",
    "MLFLOW_GUNICORN_OPTS": "-b 0.0.0.0:{other}",
    "MLFLOW_SERVER_ALLOWED_HOSTS": "*",
}


def minimal_workdir(folder: Path) -> Path:
    """A workdir as a search leaves it, as far as `ui` reads it: condsearch.json naming an SQLite
    store (which the MLflow server creates on start)."""
    workdir = folder / "run"
    workdir.mkdir()
    state = {"study_name": "s", "storage": f"sqlite:///{workdir}/study.db",
             "tracking_uri": f"sqlite:///{workdir}/mlflow.db", "experiment_id": "0",
             "experiment_name": "Default", "space_name": "s",
             "objectives": [["accuracy", "maximize"]]}
    (workdir / "condsearch.json").write_text(json.dumps(state))
    return workdir


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def listeners(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} writes them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_the_server_environment_has_no_variable_that_could_widen_its_listener(tmp_path):
    environ = {**{k: v.format(other=5001) for k, v in WIDE_OPEN.items()},
               "UVICORN_UDS": "/tmp/x.sock", "MLFLOW_STATIC_PREFIX": "/elsewhere",
               "PATH": "/usr/bin", "MLFLOW_WORKERS": "2"}
    env, ignored = ui_environment(environ)
    assert env == {"PATH": "/usr/bin", "MLFLOW_WORKERS": "2"}
    assert ignored == sorted(set(environ) - set(env))
    command = ui_command(read_workdir(minimal_workdir(tmp_path)), 5123)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5123"
    assert "0.0.0.0" not in " ".join(command)


@pytest.mark.slow
def test_sigterm_to_ui_stops_its_whole_server_which_only_ever_listened_on_loopback(tmp_path):
    workdir = minimal_workdir(tmp_path)
    port, other = free_port(), free_port()
    env = {**os.environ, **{k: v.format(other=other) for k, v in WIDE_OPEN.items()},
           "UVICORN_UDS": str(tmp_path / "uvicorn.sock")}
    log = (tmp_path / "ui.log").open("w+")
    cli = subprocess.Popen([sys.executable, "-m", "condsearch", "ui", "--workdir", str(workdir),
                            "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    pgid = None
    try:
        assert wait_for(lambda: answers(port) or cli.poll() is not None, 180), "no answer in 180 s"
        assert cli.poll() is None, Path(log.name).read_text()[-3000:]
        printed = Path(log.name).read_text()
        assert f"MLflow UI on http://127.0.0.1:{port}/#/experiments/0" in printed
        assert "note: ignoring GUNICORN_CMD_ARGS, MLFLOW_GUNICORN_OPTS, MLFLOW_HOST" in printed

        (server,) = children_of(cli.pid)
        pgid = os.getpgid(server)
        assert pgid == server != os.getpgid(cli.pid)  # a process group of its own
        assert listeners(port) and listeners(port) <= LOOPBACK, listeners(port)
        assert not listeners(other) and not (tmp_path / "uvicorn.sock").exists()

        cli.send_signal(signal.SIGTERM)  # the CLI only
        assert cli.wait(timeout=60) == 128 + signal.SIGTERM
        assert wait_for(lambda: not group_exists(pgid), 30), "the server's group outlived ui"
        assert not listeners(port)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(timeout=30)
        if pgid is not None and group_exists(pgid):
            os.killpg(pgid, signal.SIGKILL)
        log.close()


# A stand-in server: it and a child of its own ignore SIGTERM, so only SIGKILL stops them.
STUBBORN = """\
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c",
                  "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "time.sleep(600)"])
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_sighup_kills_a_server_group_that_ignores_sigterm():
    runner = ("import os, sys; from condsearch.cli import _serve; "
              f"sys.exit(_serve([sys.executable, '-c', {STUBBORN!r}], dict(os.environ)))")
    proc = subprocess.Popen([sys.executable, "-c", runner], stdout=subprocess.PIPE, text=True)
    pgid = None
    try:
        assert proc.stdout.readline().strip() == "ready"
        (server,) = children_of(proc.pid)
        pgid = os.getpgid(server)
        assert wait_for(lambda: len(children_of(server)) == 1, 30)
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=30) == 128 + signal.SIGHUP
        assert wait_for(lambda: not group_exists(pgid), 10), "a stubborn process survived"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if pgid is not None and group_exists(pgid):
            os.killpg(pgid, signal.SIGKILL)
        proc.stdout.close()
