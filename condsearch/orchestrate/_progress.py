"""What a person watching a search sees: a progress bar, the best points so far, time left."""

from __future__ import annotations

import sys
import time
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


def best_points(front: list[Any]) -> str:
    """The front's most accurate and its cheapest point, as `best acc 0.81 @ 1.2M FLOPs`."""
    pairs = [(p.values.get("accuracy"), p.values.get("flops")) for p in front]
    pairs = [(a, f) for a, f in pairs if a is not None and f is not None]
    if not pairs:
        return ""
    acc, flops = max(pairs, key=lambda pair: (pair[0], -pair[1]))
    text = f", best acc {acc:.4f} @ {_fmt_flops(flops)} FLOPs"
    cheap_acc, cheap_flops = min(pairs, key=lambda pair: (pair[1], -pair[0]))
    if cheap_flops < flops:
        text += f", cheapest {_fmt_flops(cheap_flops)} FLOPs @ acc {cheap_acc:.4f}"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
        #: the multi-fidelity rungs' result counts, when a scheduler judges the trials
        self.rung_text = ""
        self.total = total
        #: trials of this invocation finished so far (trained or failed; derived points aside)
        self.done = 0
        self.started = time.monotonic()

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

    def rungs(self, counts: dict[int, int]) -> None:
        """Show how many results each rung holds (epoch -> count), e.g. `rungs e1:9 e3:3 e9:1`."""
        self.rung_text = " | rungs " + " ".join(f"e{e}:{n}" for e, n in sorted(counts.items()))

    def trial_done(self, number: int, ok: bool, seconds: float, text: str, front: list[Any],
                   hypervolume: float, stopped: bool = False) -> None:
        """Print one line for a finished trial: `k/N` of this invocation (derived points are
        not trials here), the study's trial number (as MLflow names its run), the time left at
        the pace so far, the outcome (✓ trained, ↓ stopped early at a rung, ✗ failed), the
        best points of the front and, with a scheduler, each rung's count."""
        self.done += 1
        self.front_text = (f" | front {len(front)} pts{best_points(front)}, HV {hypervolume:.4g}"
                           + self.rung_text)
        if self.enabled:
            mark = "[green]✓[/]" if ok else "[yellow]↓[/]" if stopped else "[red]✗[/]"
            left = self.total - self.done
            pace = (time.monotonic() - self.started) / self.done
            eta = f", ~{_duration(pace * left)} left" if left > 0 else ""
            self.console.print(f"{mark} {self.done}/{self.total} trial {number} "
                               f"({seconds:.1f} s{eta}): {text}{self.front_text}",
                               highlight=False, soft_wrap=True)
        self.progress.update(self.task, advance=1, status=self.front_text)

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)
