"""What a person watching a search sees: a progress bar, the best points so far, time left."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _fmt_flops(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def describe_values(values: dict[str, float]) -> str:
    parts = []
    for name, value in values.items():
        if name == "accuracy":
            parts.append(f"acc {value:.4f}")
        elif name == "flops":
            parts.append(f"FLOPs {_fmt_flops(value)}")
        elif name == "latency":
            parts.append(f"latency {value:.3g} ms")
        else:
            parts.append(f"{name} {_fmt_flops(value)}")
    return ", ".join(parts)


class SearchProgress:
    """A rich progress bar over the trials of one invocation; silent when `enabled` is False."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), console=self.console,
            disable=not enabled or not sys.stderr.isatty(), transient=False,
        )
        self.task = self.progress.add_task("trials", total=total, status="")
        self.front_text = ""

    def __enter__(self) -> SearchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def epoch(self, number: int, epoch: int, epochs: int, record: dict[str, Any]) -> None:
        acc = record.get("val_accuracy")
        detail = f" val acc {acc:.3f}" if acc is not None else ""
        self.progress.update(self.task, status=f"trial {number}: epoch {epoch}/{epochs}{detail}"
                             + self.front_text)

    def trial_done(self, number: int, ok: bool, seconds: float, text: str, front: list[Any],
                   hypervolume: float) -> None:
        self.front_text = f" | front {len(front)} pts, HV {hypervolume:.4g}"
        if self.enabled:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self.console.print(f"{mark} trial {number} ({seconds:.1f} s): {text}")
        self.progress.update(self.task, advance=1, status=self.front_text)

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)
