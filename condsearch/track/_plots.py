"""The front as files a person opens: pareto.json, a PNG and an interactive HTML plot."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

_LABELS = {"accuracy": "validation accuracy", "flops": "mean FLOPs per sample",
           "params": "parameters", "latency": "batch-1 latency (ms)"}


def _axes(objectives: list[tuple[str, str]]) -> tuple[str, str]:
    names = [n for n, _ in objectives]
    x = "flops" if "flops" in names else names[-1]
    y = "accuracy" if "accuracy" in names else names[0]
    return x, y


def write_front_files(directory: Path, points: list[Any], objectives: list[tuple[str, str]],
                      title: str, knee: Any = None) -> list[Path]:
    """Write pareto.json (the front), pareto.png and pareto.html (every point, front highlighted,
    derived points marked, the `knee` point marked and labelled) into `directory`.

    Each is written under a temporary name in `directory` and renamed into place once all three
    are complete, so a failure (a full disk, a plotting error) leaves the files that were there
    before, never a truncated one."""
    directory.mkdir(parents=True, exist_ok=True)
    front = sorted((p for p in points if p.on_front), key=lambda p: p.values[_axes(objectives)[0]])
    writers = {
        "pareto.json": lambda path: path.write_text(
            json.dumps([{**p.row(), "knee": p is knee} for p in front], indent=2,
                       default=str) + "\n"),
        "pareto.png": lambda path: _png(path, points, front, objectives, title, knee),
        "pareto.html": lambda path: _html(path, points, front, objectives, title, knee),
    }
    staged: dict[Path, Path] = {}
    try:
        for name, write in writers.items():
            # a fresh name, created by the writer with the usual permissions
            tmp = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            staged[directory / name] = tmp
            write(tmp)
        for final, tmp in staged.items():
            os.replace(tmp, final)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return list(staged)


def _groups(points: list[Any]) -> dict[str, list[Any]]:
    return {
        "trained": [p for p in points if not p.derived and p.feasible],
        "derived (knob sweep)": [p for p in points if p.derived and p.feasible],
        "infeasible": [p for p in points if not p.feasible],
    }


def _png(path: Path, points, front, objectives, title, knee=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = _axes(objectives)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"trained": ("o", "tab:blue"), "derived (knob sweep)": ("^", "tab:gray"),
              "infeasible": ("x", "tab:red")}
    for label, group in _groups(points).items():
        if group:
            marker, color = styles[label]
            ax.scatter([p.values[x] for p in group], [p.values[y] for p in group], s=18,
                       marker=marker, color=color, alpha=0.6, label=label)
    if front:
        ax.plot([p.values[x] for p in front], [p.values[y] for p in front], "-o",
                color="tab:orange", ms=6, lw=1.5, label="Pareto front", drawstyle="steps-post")
        for p in front:
            ax.annotate(str(p.number), (p.values[x], p.values[y]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    if knee is not None:
        ax.scatter([knee.values[x]], [knee.values[y]], s=160, marker="*", color="tab:red",
                   zorder=5, label=f"knee (trial {knee.number})")
        ax.annotate("knee", (knee.values[x], knee.values[y]), fontsize=8, color="tab:red",
                    textcoords="offset points", xytext=(6, -12))
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    if x == "flops" and points and min(p.values[x] for p in points) > 0:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    try:
        fig.tight_layout()
        fig.savefig(path, format="png")  # the name may be a temporary one
    finally:
        plt.close(fig)
    return path


def _html(path: Path, points, front, objectives, title, knee=None) -> Path:
    import plotly.graph_objects as go

    x, y = _axes(objectives)
    fig = go.Figure()

    def hover(p) -> str:
        knobs = ", ".join(f"{k}={v:g}" for k, v in p.knobs.items())
        origin = f"derived from trial {p.trial}" if p.derived else "trained"
        return f"trial {p.number} ({origin})<br>{knobs}"

    symbols = {"trained": "circle", "derived (knob sweep)": "triangle-up", "infeasible": "x"}
    for label, group in _groups(points).items():
        if group:
            fig.add_trace(go.Scatter(
                x=[p.values[x] for p in group], y=[p.values[y] for p in group], mode="markers",
                name=label, marker={"symbol": symbols[label], "size": 8, "opacity": 0.6},
                text=[hover(p) for p in group], hoverinfo="text+x+y"))
    if front:
        fig.add_trace(go.Scatter(
            x=[p.values[x] for p in front], y=[p.values[y] for p in front], mode="lines+markers",
            name="Pareto front", line={"shape": "hv", "width": 2}, marker={"size": 10},
            text=[hover(p) for p in front], hoverinfo="text+x+y"))
    if knee is not None:
        fig.add_trace(go.Scatter(
            x=[knee.values[x]], y=[knee.values[y]], mode="markers+text", name="knee",
            marker={"symbol": "star", "size": 18, "color": "crimson"}, text=["knee"],
            textposition="bottom right", hovertext=[hover(knee)], hoverinfo="text+x+y"))
    fig.update_layout(title=title, xaxis_title=_LABELS.get(x, x), yaxis_title=_LABELS.get(y, y),
                      template="plotly_white")
    if x == "flops":
        fig.update_xaxes(type="log")
    # The page must open offline, so the plotting library is embedded rather than fetched.
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path
