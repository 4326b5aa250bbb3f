"""What every experiment script reports the same way: the machine it ran on, and its results
written as `results.json` plus a table between markers in the folder's README."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

START, END = "<!-- RESULTS START -->", "<!-- RESULTS END -->"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int | None = None) -> str:
    """One line naming the machine, as results tables print it."""
    threads = torch.get_num_threads() if threads is None else threads
    return (f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores, {threads} torch "
            f"thread(s), torch {torch.__version__}")


def replace_block(readme: Path, body: str, title: str, start: str = START, end: str = END) -> None:
    """Put `body` between the markers of `readme` (creating the file or the markers if absent)."""
    current = readme.read_text() if readme.exists() else f"# {title}\n"
    if start not in current:
        current = current.rstrip("\n") + f"\n\n{start}\n{end}\n"
    before, _, rest = current.partition(start)
    _, _, after = rest.partition(end)
    readme.write_text(f"{before}{start}\n{body}\n{end}{after}")


def write_results(out: Path, title: str, payload: dict[str, Any], settings: dict[str, Any],
                  text: str) -> None:
    """Write `results.json` ({"settings": ..., **payload}) and the README table with the
    command, machine and run time from `settings`."""
    out.mkdir(parents=True, exist_ok=True)
    root = f"{Path(__file__).resolve().parents[1]}/"
    # Paths inside the repository are kept relative, so results read the same on every clone.
    settings = {k: v.removeprefix(root) if isinstance(v, str) else v for k, v in settings.items()}
    (out / "results.json").write_text(json.dumps({"settings": settings, **payload}, indent=2) + "\n")
    replace_block(out / "README.md", f"Command: `{settings['command']}` ({settings['machine']}; "
                                     f"{settings['seconds']:.0f} s in all)\n\n{text}", title)
