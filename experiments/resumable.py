"""What lets the long experiments run for hours unattended: finished units of work kept on disk
and reused by a rerun with the same settings (so a stopped run resumes and processes split by
seed add up), and progress lines with an estimate of the time left."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any


class Units:
    """The finished units of one experiment's settings: one JSON file each under
    `folder/<hash of the settings>/`, written under a temporary name and renamed, so a unit is
    either whole or absent and processes running other units at the same time never clash."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        text = json.dumps(settings, sort_keys=True, default=str)
        self.folder = Path(folder) / hashlib.sha256(text.encode()).hexdigest()[:12]
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.json").write_text(text + "\n")

    def _path(self, name: str) -> Path:
        return self.folder / f"{name.replace('/', '_')}.json"

    def get(self, name: str) -> Any:
        """The unit's result, or None when it has not finished."""
        path = self._path(name)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, name: str, result: Any) -> None:
        path = self._path(name)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(result, indent=1))
        partial.replace(path)

    def all(self) -> dict[str, Any]:
        """Every finished unit of these settings, whichever process ran it, by name."""
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))
                if p.name != "settings.json"}


class Progress:
    """Progress over named parts of a long run, each with an amount of work (epochs, runs): every
    update prints the work done out of the total and the time left at the rate seen so far."""

    def __init__(self, total: dict[str, float], what: str) -> None:
        self.state = {name: (0.0, amount, 0.0) for name, amount in total.items()}
        self.what = what

    def update(self, name: str, done: float, seconds: float) -> None:
        """Part `name` has done `done` of its work in `seconds` in all."""
        _, amount, _ = self.state[name]
        self.state[name] = (min(done, amount), amount, seconds)
        done_all = sum(d for d, _, _ in self.state.values())
        total_all = sum(a for _, a, _ in self.state.values())
        seconds_all = sum(s for _, _, s in self.state.values())
        left = seconds_all / done_all * (total_all - done_all) if done_all else math.nan
        print(f"[{time.strftime('%H:%M:%S')}] {done_all:g}/{total_all:g} {self.what}"
              + (f", about {duration(left)} left" if math.isfinite(left) else ""), flush=True)


def duration(seconds: float) -> str:
    """A time span as a person reads it: minutes, or hours past an hour and a half."""
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"
