"""The `condsearch` command: validate, search, pareto, export, convert, ui.

Imports are deferred to each command so `condsearch validate` answers without loading torch.
Bad input exits 2 with a message, Ctrl-C exits 130, never with a traceback for either.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Architecture search for conditional-computation networks, scored by the FLOPs each "
         "input actually costs.",
)
out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    from condsearch.space import SpaceError

    errors: list[type[BaseException]] = [SpaceError, FileNotFoundError]
    for module, name in (("condsearch.orchestrate", "SearchError"), ("condsearch.data", "TaskError"),
                         ("condsearch.export", "ExportError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except ImportError:
            pass
    return tuple(errors)


def _resolve_workdir(workdir: Path | None) -> Path:
    """The given workdir, or the only search under runs/ when none is given."""
    if workdir is not None:
        return workdir
    found = sorted(p.parent for p in Path("runs").glob("*/condsearch.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        _fail("no search found under runs/; pass --workdir DIR")
    _fail("several searches under runs/; pass --workdir with one of: "
          + ", ".join(str(p) for p in found))


#: the largest seed; kept equal to condsearch.space._schema.MAX_SEED (not imported: this module
#: loads nothing of condsearch at import)
MAX_SEED = 2**31 - 1

STORAGE_HELP = ("Read the search from its study database URL instead of a workdir (from any "
                "machine that reaches it and the MLflow server).")
STUDY_HELP = "The study's name in --storage (needed when it holds several)."


def _source(workdir: Path | None, storage: str | None, study: str | None) -> Any:
    """A workdir, or the state read from a study database (`--storage`)."""
    if storage is None:
        return _resolve_workdir(workdir)
    if workdir is not None:
        _fail("give either --workdir or --storage, not both")
    from condsearch.orchestrate import state_from_storage

    try:
        return state_from_storage(storage, study)
    except _user_errors() as exc:
        _fail(str(exc))


def _load_space(space: Path, overrides: list[str] | None, trust_code: bool = False) -> Any:
    """The validated space, or exit 2 with its `file:line: key: problem` lines."""
    from condsearch.space import SpaceError, load_space

    try:
        return load_space(space, overrides or [], trust_code=trust_code)
    except SpaceError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{space}: cannot read: {exc.strerror or exc}")


@app.command()
def validate(
    space: Annotated[Path, typer.Argument(help="Search-space YAML file.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override key.path=value.")] = None,
    trust_code: Annotated[bool, typer.Option(
        "--trust-code", help="Import a backbone the space names as 'module:function' (code) "
                             "and check the keys it declares.")] = False,
) -> None:
    """Check a search space; print `file:line: key: problem` lines and exit 2 when it is wrong.

    A backbone named by import path is code and is not imported unless --trust-code is given;
    its declared keys are then checked when a search imports it."""
    loaded = _load_space(space, set_, trust_code)
    names = ", ".join(f"{n} ({d[:3]})" for n, d in loaded.objectives)
    out.print(f"{space}: ok — search space {loaded.name!r}, objectives {names}, "
              f"{loaded.trials} trials by default, sampler {loaded.sampler['name']}",
              markup=False, highlight=False, soft_wrap=True)
    workers = int(loaded.execution.get("workers_per_trial") or 1)
    if workers > 1:
        err.print(f"note: search.workers_per_trial is {workers}: this space runs only with "
                  "`condsearch search --backend ray` (the local backend trains a trial in one "
                  "process)", markup=False, highlight=False, soft_wrap=True)
    for name in loaded.untrusted:
        err.print(f"note: model.backbone {name!r} is code; it was not imported, so the keys it "
                  "declares were not checked (run with --trust-code to check them)",
                  markup=False, highlight=False, soft_wrap=True)


@app.command()
def search(
    space: Annotated[Path, typer.Argument(help="Search-space YAML file.")],
    trials: Annotated[int | None, typer.Option(help="Trials to add (default: the YAML's).")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Default: runs/<space name>.")] = None,
    backend: Annotated[str, typer.Option(help="local (in-process Optuna) or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (ray backend).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: "
                                                     "the workdir's record, else "
                                                     "MLFLOW_TRACKING_URI, else sqlite in the "
                                                     "workdir).")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name, created if "
                                                   "absent (default: the workdir's record, else "
                                                   "MLFLOW_EXPERIMENT_NAME / _ID, else the "
                                                   "space's name).")] = None,
    experiment_id: Annotated[str | None, typer.Option(help="Id of an existing MLflow "
                                                      "experiment (instead of "
                                                      "--experiment).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE tag on the search's parent "
                                                  "run and every trial run; repeatable.")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna study database URL (default: "
                                                "sqlite in the workdir).")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler and training seed, 0 to 2**31-1 "
                                             "(default: the YAML's).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override key.path=value; "
                                                   "repeatable.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    new_study: Annotated[bool, typer.Option("--new-study", help="Start a new study in a "
                                            "workdir whose recorded study is gone from its "
                                            "storage (a deleted or emptied study.db); refused "
                                            "while it is still there.")] = False,
) -> None:
    """Run (or resume) a search: trials are trained, measured and logged to MLflow.

    A backbone the space names as 'module:function' is code, imported and run by the search.
    A workdir may be moved or copied: it resumes from its new place with its own files."""
    if trials is not None and trials < 1:
        _fail(f"--trials must be >= 1, got {trials}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        _fail(f"--seed must be between 0 and {MAX_SEED} (2**31-1, room for the seeds of later "
              f"trials and resumes), got {seed}")
    tags = _parse_tags(tag)
    loaded = _load_space(space, set_, trust_code=True)
    from condsearch.orchestrate import search as run_search
    from condsearch.orchestrate._workdir import check_workdir

    workdir = workdir or Path("runs") / loaded.name
    try:
        check_workdir(workdir)
        summary = run_search(loaded, trials=trials, workdir=workdir, backend=backend,
                             tracking_uri=tracking_uri, seed=seed, progress=not quiet,
                             storage=storage, address=address, experiment=experiment,
                             experiment_id=experiment_id, tags=tags, new_study=new_study)
    except KeyboardInterrupt:
        _fail(f"interrupted; completed trials are kept in {workdir}; run the same command "
              "to resume", 130)
    except _user_errors() as exc:
        _fail(str(exc))
    if not quiet:
        from condsearch.orchestrate._points import knee_point

        _print_front(summary.front, [n for n, _ in loaded.objectives],
                     knee_point(summary.front, loaded.objectives))
        stopped = (f", {summary.pruned} stopped early by the scheduler"
                   if summary.pruned else "")
        err.print(f"{summary.completed} trials completed{stopped}, {summary.failed} failed in "
                  f"{summary.seconds:.0f} s; hypervolume {describe_hypervolume(summary)}",
                  highlight=False)
        err.print(f"results: {workdir}  (MLflow UI: condsearch ui --workdir {workdir})")


#: what each objective's values are measured in, for the hypervolume's units
_UNITS = {"accuracy": "accuracy", "flops": "FLOPs", "params": "parameters", "latency": "ms"}


def describe_hypervolume(summary: Any) -> str:
    """`2.82e+05 accuracy x FLOPs (reference point: accuracy 0, FLOPs 2.6M)`: the value with
    its units and the point it is measured from."""
    if not summary.reference:
        return f"{summary.hypervolume:.4g} (no reference point yet)"
    units = " x ".join(_UNITS.get(n, n) for n in summary.reference)
    where = ", ".join(f"{n} {_fmt(v)}" for n, v in summary.reference.items())
    return f"{summary.hypervolume:.4g} {units} (reference point: {where})"


def _parse_tags(items: list[str] | None) -> dict[str, str]:
    """`--tag KEY=VALUE` options as a dict, or exit 2 with one line naming the bad one."""
    from condsearch.track import TrackingChoiceError, parse_tags

    try:
        return parse_tags(items or [])
    except TrackingChoiceError as exc:
        _fail(str(exc))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def _print_front(points: list[Any], names: list[str], knee: Any = None) -> None:
    """The points as a table; the knee (`--pick knee`) marked ★ in the last column."""
    table = Table(title="Pareto front", title_justify="left")
    for column in ("trial", "from", *names, "knobs", "knee"):
        table.add_column(column, justify="right" if column not in ("knobs", "knee") else "left")
    for p in points:
        knobs = ", ".join(f"{k}={v:g}" for k, v in p.knobs.items())
        origin = (f"{p.trial} (sweep)" if p.derived else "trained" if p.stopped_at is None
                  else f"stopped, epoch {p.stopped_at}")
        table.add_row(str(p.number), origin,
                      *(_fmt(p.values[n]) for n in names), knobs, "★ knee" if p is knee else "")
    out.print(table)


@app.command()
def pareto(
    workdir: Annotated[Path | None, typer.Option(help="The search's workdir.")] = None,
    storage: Annotated[str | None, typer.Option(help=STORAGE_HELP)] = None,
    study: Annotated[str | None, typer.Option(help=STUDY_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every completed point, not just the "
                                       "front, and each trial a scheduler stopped early at "
                                       "its last rung's values.")] = False,
) -> None:
    """Print the current Pareto front of a search (trials trained to the end and their swept
    knob settings; a trial stopped early by a scheduler is shown only with --all)."""
    from condsearch.orchestrate import all_points
    from condsearch.orchestrate._points import knee_point

    try:
        state, points = all_points(_source(workdir, storage, study), stopped=all_)
    except _user_errors() as exc:
        _fail(str(exc))
    shown = points if all_ else [p for p in points if p.on_front]
    key = "flops" if "flops" in state.names() else state.names()[-1]
    shown.sort(key=lambda p: (p.values[key], p.number))
    knee = knee_point(points, [(n, d) for n, d in state.objectives])
    if as_json:
        rows = [{**p.row(), "knee": p is knee} for p in shown]
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
    else:
        _print_front(shown, state.names(), knee)


@app.command()
def export(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write.")],
    workdir: Annotated[Path | None, typer.Option(help="The search's workdir.")] = None,
    storage: Annotated[str | None, typer.Option(help=STORAGE_HELP)] = None,
    study: Annotated[str | None, typer.Option(help=STUDY_HELP)] = None,
    trial: Annotated[int | None, typer.Option(help="Any completed trial, by number.")] = None,
    pick: Annotated[str | None, typer.Option(help="knee | max-accuracy | min-flops "
                                             "(a front point).")] = None,
    register: Annotated[str | None, typer.Option(help="Also register in the MLflow Model "
                                                 "Registry under this name.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into --out even when it is a "
                                        "non-empty directory that is not a previous export "
                                        "(its other files stay).")] = False,
) -> None:
    """Export a point as architecture.yaml + weights.safetensors + metrics.json.

    --out may be new, empty or a previous export (replaced whole); the files are written beside
    it and renamed into place, so it never holds a partial export."""
    from condsearch.export import export_point

    if (trial is None) == (pick is None):
        _fail("name exactly one of --trial N or --pick knee|max-accuracy|min-flops")
    try:
        path = export_point(_source(workdir, storage, study), out_dir, trial=trial, pick=pick,
                            register=register, force=force)
    except _user_errors() as exc:
        _fail(str(exc))
    metrics = json.loads((path / "metrics.json").read_text())
    values = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics["values"].items())
    out.print(f"exported trial {metrics['trial']} ({values}) to {path}", markup=False)
    if "registered" in metrics:
        r = metrics["registered"]
        out.print(f"registered as {r['name']} version {r['version']} (alias {r['alias']})",
                  markup=False)
    out.print(f"load it with: condsearch.load_exported({str(path)!r})", markup=False)


#: the splits an export can be evaluated on
SPLITS = ("val", "test", "train")


@app.command()
def evaluate(
    export_dir: Annotated[Path, typer.Argument(help="A directory `condsearch export` wrote.")],
    split: Annotated[str, typer.Option(help="val | test | train: the split of the export's "
                                       "task to evaluate on.")] = "test",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
    trust_code: Annotated[bool, typer.Option("--trust-code", help="Import the task factory or "
                                             "backbone the export names by import path (code "
                                             "from the export; only for exports you "
                                             "trust).")] = False,
) -> None:
    """Re-evaluate an export: accuracy and per-sample FLOPs (mean, p50, p90, max) on a split.

    The search measured its points on the validation split; `--split test` (the default) gives
    the held-out figures a report quotes. Weights are checked against the export's manifest."""
    from condsearch.export import evaluate_exported

    if split not in SPLITS:
        _fail(f"unknown --split {split!r}; use one of {', '.join(SPLITS)}")
    try:
        figures = evaluate_exported(export_dir, split=split, device=device,
                                    trust_code=trust_code)
    except _user_errors() as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return
    out.print(f"{export_dir}, {split} split:", markup=False, highlight=False)
    table = Table()
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, _fmt(value))
    out.print(table)


FORMATS = ("nni",)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="A search-space YAML file (--to) or an NNI "
                                           "search_space.json (--from).")],
    output: Annotated[Path, typer.Argument(help="The file to write.")],
    to: Annotated[str | None, typer.Option("--to", help="Write SOURCE, a condsearch space, in "
                                           "this format: nni.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Read SOURCE in this format (nni) "
                                              "and write a condsearch space.")] = None,
    task: Annotated[str | None, typer.Option(help="--from: the dataset (NNI's format has no "
                                             "task); asked for when interactive.")] = None,
    objectives: Annotated[str | None, typer.Option(help="--from: comma-separated objectives; "
                                                   "default accuracy,flops.")] = None,
    backbone: Annotated[str | None, typer.Option(help="--from: the backbone when the file has "
                                                 "no model.backbone (default: read from its "
                                                 "keys, else token_transformer).")] = None,
    name: Annotated[str | None, typer.Option(help="--from: the space's name (default: the "
                                             "output file's stem).")] = None,
    like: Annotated[Path | None, typer.Option(help="--from: take what NNI's format lacks (task, "
                                              "objectives, constraints, sampler, sweep, "
                                              "search) from this space.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="--to: override key.path=value "
                                                   "in SOURCE first.")] = None,
) -> None:
    """Convert a search space to NNI's search_space.json (--to nni), or one back (--from nni)."""
    if (to is None) == (from_ is None):
        _fail("name exactly one of --to nni or --from nni")
    fmt = to if to is not None else from_
    if fmt not in FORMATS:
        _fail(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if to is not None:
        _convert_to_nni(source, output, set_)
    else:
        if set_:
            _fail("--set applies to --to; with --from, edit the NNI file or use --like")
        _convert_from_nni(source, output, task, objectives, backbone, name, like)


def _convert_to_nni(source: Path, output: Path, overrides: list[str] | None) -> None:
    from condsearch.interop import (
        ConvertError,
        NniUnavailable,
        check_with_nni,
        require_nni,
        space_to_nni,
    )

    try:
        require_nni("condsearch convert --to nni")  # first: NNI itself checks what is written
    except NniUnavailable as exc:
        _fail(str(exc))
    space = _load_space(source, overrides)
    try:
        search_space, notes = space_to_nni(space)
        check_with_nni(search_space)
    except ConvertError as exc:
        _fail(f"{source}: cannot convert to NNI's format:\n" + "\n".join(
            f"  {p}" for p in exc.problems))
    except ValueError as exc:  # NNI's own validator
        _fail(f"{source}: NNI does not accept the converted space: {exc}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(search_space, indent=2) + "\n", encoding="utf-8")
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"wrote {output}: NNI search space of {space.name!r} "
              f"({len(search_space)} top-level parameters)", markup=False, highlight=False,
              soft_wrap=True)


def _convert_from_nni(source: Path, output: Path, task: str | None, objectives: str | None,
                      backbone: str | None, name: str | None, like: Path | None) -> None:
    from condsearch.interop import ConvertError, document_to_yaml, nni_to_document
    from condsearch.space import SpaceError, parse_space

    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        _fail(f"{source}: cannot read: {exc.strerror or exc}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        _fail(f"{source}: not valid JSON: {exc}")
    like_space = _load_space(like, None) if like is not None else None
    interactive = sys.stdin.isatty() and like_space is None
    if task is None and interactive:
        task = typer.prompt("dataset of the space (parity, digits, fashion_mnist, npz or "
                            "module:function)", default="digits")
    if objectives is None and interactive:
        objectives = typer.prompt("objectives", default="accuracy,flops")
    wanted = [o.strip() for o in objectives.split(",") if o.strip()] if objectives else None
    try:
        doc, notes = nni_to_document(data, name=name or (None if like_space else output.stem),
                                     dataset=task, objectives=wanted, backbone=backbone,
                                     like=like_space)
    except ConvertError as exc:
        _fail(f"{source}: cannot convert from NNI's format:\n" + "\n".join(
            f"  {p}" for p in exc.problems))
    text = document_to_yaml(doc, header=f"# Converted from NNI's format ({source.name}) by "
                                        "condsearch convert --from nni.\n")
    try:
        parse_space(text, str(output))
    except SpaceError as exc:
        _fail(f"{source}: the converted space is not valid:\n" + "\n".join(
            f"  {p.key}: {p.message}" for p in exc.problems))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"wrote {output}: search space {doc['name']!r}; check it with condsearch "
              f"validate {output}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def ui(
    workdir: Annotated[Path | None, typer.Option(help="The search's workdir.")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI for a search's tracking store (the one its workdir recorded) on
    127.0.0.1 only; for a tracking server, print the server's address of the experiment instead.
    The link opens condsearch's view of the experiment (accuracy against FLOPs of every point,
    the front in orange; written into the experiment first), and a second one the front alone.

    Settings in the environment that would move or widen the server's listener (MLFLOW_HOST,
    MLFLOW_UVICORN_OPTS, UVICORN_*, GUNICORN_CMD_ARGS, ...) are ignored, with a note. Ctrl-C,
    SIGTERM or SIGHUP stops the server and every process it started; the exit status is then
    128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), else the server's own."""
    import os

    from condsearch.orchestrate import read_workdir
    from condsearch.track import ui_views

    try:
        state = read_workdir(_resolve_workdir(workdir))
    except _user_errors() as exc:
        _fail(str(exc))
    command = ui_command(state, port)
    server = state.tracking_uri if command is None else f"http://127.0.0.1:{port}"
    try:
        views = ui_views(state.tracking_uri, state.experiment_id)
    except Exception as exc:  # noqa: BLE001 - the UI still shows the runs, without the views
        err.print(f"note: could not write condsearch's views into the experiment "
                  f"({type(exc).__name__}: {str(exc)[:300]})", markup=False, highlight=False,
                  soft_wrap=True)
        views = None
    if views is None:  # no store yet, or MLflow failed: the experiment's own page
        links = [experiment_page(server, state.experiment_id)]
    else:
        links = [server.rstrip("/") + path for path in views]
    more = [f"the front alone: {links[1]}"] if len(links) > 1 else []
    if command is None:
        for line in [f"{state.tracking_uri} is an MLflow server; its UI: {links[0]}", *more]:
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    env, ignored = ui_environment(os.environ)
    if ignored:
        err.print(f"note: ignoring {', '.join(ignored)} from the environment: condsearch ui "
                  "serves on 127.0.0.1 only", markup=False, highlight=False, soft_wrap=True)
    for line in [f"MLflow UI on {links[0]} (Ctrl-C stops it)", *more]:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(_serve(command, env))


def experiment_page(server: str, experiment_id: str) -> str:
    """The address of an experiment's page in the MLflow UI at `server`."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}"


def ui_command(state: Any, port: int) -> list[str] | None:
    """The `mlflow ui` command serving the store a workdir recorded on 127.0.0.1:`port` (run it
    with `ui_environment`'s environment); None for an HTTP tracking server, which is its own
    UI."""
    if state.tracking_uri.startswith(("http://", "https://")):
        return None
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", state.tracking_uri,
            "--host", "127.0.0.1", "--port", str(port)]


#: Variables `mlflow server` (mlflow/cli, mlflow/utils/cli_args.py), uvicorn (its click options
#: read UVICORN_<OPTION>) or gunicorn read that could move the UI off 127.0.0.1:PORT, add a
#: listener (a second gunicorn `-b`, uvicorn's --uds/--fd), change the path the printed link
#: points at, or loosen the loopback server's host/origin checks.
UI_IGNORED_VARIABLES = (
    "MLFLOW_HOST", "MLFLOW_PORT", "MLFLOW_UVICORN_OPTS", "MLFLOW_GUNICORN_OPTS",
    "MLFLOW_STATIC_PREFIX", "MLFLOW_ARTIFACTS_ONLY", "MLFLOW_SERVER_ALLOWED_HOSTS",
    "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE",
    "MLFLOW_SERVER_X_FRAME_OPTIONS", "GUNICORN_CMD_ARGS",
)
UI_IGNORED_PREFIXES = ("UVICORN_",)


def ui_environment(environ: Any) -> tuple[dict[str, str], list[str]]:
    """(the environment to run `ui_command` in, the names left out of it): `environ` less every
    variable that could make the server listen anywhere but the 127.0.0.1:PORT `ui` prints.
    Removing them, whatever their values, leaves the command's own `--host 127.0.0.1 --port P`
    as the only bind the server sees."""
    ignored = sorted(name for name in environ
                     if name in UI_IGNORED_VARIABLES or name.startswith(UI_IGNORED_PREFIXES))
    return {k: v for k, v in environ.items() if k not in ignored}, ignored


#: Seconds the server's process group has to exit after SIGTERM before it is killed.
UI_STOP_GRACE = 5.0


def _serve(command: list[str], env: dict[str, str]) -> int:
    """Run the server in a process group (and session) of its own until it exits or this process
    gets SIGTERM, SIGINT or SIGHUP; then stop the whole group. The server's exit status, or
    128 + the signal's number."""
    import signal
    import subprocess

    received: list[int] = []
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda signum, _frame: received.append(signum))
                for s in handled}
    proc = None
    try:
        proc = subprocess.Popen(command, env=env, start_new_session=True)
        while not received:
            try:
                return proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        return 128 + received[0]
    finally:
        if proc is not None:
            _stop_group(proc)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_group(proc: Any, grace: float = UI_STOP_GRACE) -> None:
    """SIGTERM to every process in `proc`'s group (it leads one), SIGKILL to what is left after
    `grace` seconds; also to its descendants that moved to sessions of their own (MLflow's job
    subprocesses do), when psutil can find them."""
    import os
    import signal
    import time

    try:
        import psutil

        strays = [p for p in psutil.Process(proc.pid).children(recursive=True)
                  if _pgid(p.pid) != proc.pid]
    except Exception:  # psutil missing, or the leader already gone
        strays = []

    def signal_all(signum: int) -> bool:
        """Send `signum` to the group and the strays; whether any of them was still there."""
        alive = False
        try:
            os.killpg(proc.pid, signum)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
        for p in strays:
            try:
                if p.is_running():
                    p.send_signal(signum)
                    alive = True
            except Exception:
                pass
        return alive

    if signal_all(signal.SIGTERM):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reaps the leader, so a gone group reads as gone
            if not signal_all(0):
                break
            time.sleep(0.1)
        else:
            signal_all(signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except Exception:
        pass


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except OSError:
        return None


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
