"""The `syne_tune_moasha` arm: Syne Tune's own MOASHA scheduler (random configurations from a Syne
Tune config space built from the search space's distributions) driving condsearch's own trial
function, one trial after another (`n_workers=1`), each trial a subprocess of Syne Tune's
`PythonBackend`.

Each trial runs `condsearch.orchestrate._trial.run_trial` (seed, build, fit, full validation
evaluation, the space's inference-knob sweep) and reports every epoch to Syne Tune: the
validation accuracy the fit measures on the whole split, and the mean per-sample FLOPs on the
fixed, seeded validation subset condsearch's own scheduler uses
(`condsearch.train._interim.subset_indices` / `interim_metrics`, as `condsearch.tune`'s
`EpochReporter` does for Ray Tune). The last epoch's report carries the full evaluation instead.
MOASHA minimises every metric it is given, so it sees `error` (1 - accuracy) and `flops_norm`
(FLOPs divided by the study's FLOPs reference, so its epsilon-net ranking, a Euclidean distance,
weighs both objectives on the same scale).

Before each report the trial writes what it measured to `condsearch_trial.json` in its Syne Tune
trial folder, so a trial MOASHA stops (its process killed) keeps its record: epochs trained,
accuracy at each epoch, and, for a trial that reached the last epoch, its final point and the
swept (derived) points. `read_trials` turns these files into the study's trial records.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TRIAL_FILE = "condsearch_trial.json"
PLAN_FILE = "plan.json"
#: how to install Syne Tune beside the project's environment (printed when it is missing)
INSTALL_HINT = ("syne_tune_moasha skipped: `import syne_tune` failed. Install it beside the "
                "project's environment and put it on PYTHONPATH: .venv/bin/pip install --target "
                "/tmp/st-lib syne-tune==0.16.0 dill sortedcontainers --no-deps; then run with "
                "PYTHONPATH=/tmp/st-lib")


def available() -> tuple[bool, str]:
    """(whether Syne Tune imports, the reason when it does not)."""
    try:
        import syne_tune  # noqa: F401
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA  # noqa: F401
    except Exception as exc:  # ImportError, or a dependency of it failing
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("syne-tune")
    except PackageNotFoundError:
        return "unknown"


# ---- the config space: the search space's distributions in Syne Tune's terms --------------------


def st_name(name: str) -> str:
    """A Syne Tune parameter name for an Optuna parameter name (`model.stem` -> `p_model_stem`):
    PythonBackend passes every value as a command-line argument."""
    return "p_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def config_space(space: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(the Syne Tune config space of `space`'s searched keys, Syne Tune name -> Optuna name).

    A choice becomes a choice of item indices (an item may be a list, which a command line
    cannot carry); int and float ranges keep their bounds, step and log scale. Fixed keys are
    left out: `space.sample` fills them in. Keys of a switched-off component are sampled too and
    then ignored, as random search does."""
    from syne_tune.config_space import (
        choice,
        lograndint,
        loguniform,
        qrandint,
        quniform,
        randint,
        uniform,
    )

    from condsearch.space._distributions import Choice, FloatRange, IntRange

    out: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, dist in space.distributions().items():
        key = st_name(name)
        if key in names:
            raise ValueError(f"two parameters map to the Syne Tune name {key!r}")
        if isinstance(dist, Choice):
            out[key] = choice(list(range(len(dist.items))))
        elif isinstance(dist, IntRange):
            if dist.log:
                out[key] = lograndint(dist.lo, dist.hi)
            elif dist.step != 1:
                out[key] = qrandint(dist.lo, dist.hi, q=dist.step)
            else:
                out[key] = randint(dist.lo, dist.hi)
        elif isinstance(dist, FloatRange):
            if dist.log:
                out[key] = loguniform(dist.lo, dist.hi)
            elif dist.step:
                out[key] = quniform(dist.lo, dist.hi, q=dist.step)
            else:
                out[key] = uniform(dist.lo, dist.hi)
        else:  # Fixed
            continue
        names[key] = name
    return out, names


def optuna_params(space: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The Optuna parameters (for `optuna.trial.FixedTrial`) of a Syne Tune config: a choice
    index back to its item (structured items as the JSON text `Choice.suggest` uses)."""
    from condsearch.space._distributions import _PRIMITIVE, Choice, FloatRange, IntRange

    params: dict[str, Any] = {}
    for name, dist in space.distributions().items():
        key = st_name(name)
        if key not in config:
            continue
        value = config[key]
        if isinstance(dist, Choice):
            item = dist.items[int(value)]
            primitive = all(isinstance(i, _PRIMITIVE) for i in dist.items)
            params[name] = item if primitive else json.dumps(item)
        elif isinstance(dist, IntRange):
            params[name] = int(value)
        elif isinstance(dist, FloatRange):
            params[name] = float(value)
    return params


def arch_of(space: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The arch condsearch builds for a Syne Tune config."""
    import optuna

    return space.sample(optuna.trial.FixedTrial(optuna_params(space, config)))


# ---- the trial: runs in Syne Tune's subprocess ------------------------------------------------


def condsearch_trial(**config: Any) -> None:
    """The function PythonBackend serialises and runs (without globals: it imports this module
    from the folder the config names)."""
    import sys

    sys.path.insert(0, config["cs_module_dir"])
    import syne_tune_arm

    syne_tune_arm.run_syne_tune_trial(config)


def _trial_folder() -> Path:
    """The Syne Tune trial folder: the parent of the checkpoint folder LocalBackend passes as
    `--st_checkpoint_dir` (its name is the trial id)."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--st_checkpoint_dir" and i + 1 < len(argv):
            return Path(argv[i + 1]).parent
        if arg.startswith("--st_checkpoint_dir="):
            return Path(arg.split("=", 1)[1]).parent
    raise RuntimeError("no --st_checkpoint_dir argument: not run by Syne Tune's LocalBackend")


def run_syne_tune_trial(config: dict[str, Any]) -> None:
    """Train and measure one Syne Tune trial with condsearch's trial code, reporting every epoch."""
    from syne_tune import Reporter

    from condsearch.orchestrate._trial import TrialSpec, run_trial
    from condsearch.space import load_space
    from condsearch.space._bounds import TrialLimits
    from condsearch.train._fit import FitState
    from condsearch.train._interim import interim_metrics, subset_indices

    folder = _trial_folder()
    trial_id = int(folder.name)
    plan = json.loads(Path(config["cs_plan"]).read_text())
    space = load_space(plan["space"], plan["overrides"], trust_code=True)
    arch = arch_of(space, config)
    spec = TrialSpec(number=trial_id, arch=arch, task=space.task,
                     sweep=dict(space.sweep) if plan["sweep"] else {},
                     seed=int(plan["seed"]) + trial_id, tracking=None,
                     objectives=list(space.objectives), code_paths=list(space.code_paths),
                     limits=TrialLimits.of(space))
    flops_ref = float(plan["flops_reference"])
    record: dict[str, Any] = {"trial_id": trial_id, "arch": arch, "started": time.time(),
                              "epochs_trained": 0, "accuracy_by_epoch": {},
                              "interim_flops_by_epoch": {}, "finished": False, "final": None,
                              "derived": [], "error": None, "updated": time.time()}
    out = folder / TRIAL_FILE

    def write() -> None:
        record["updated"] = time.time()
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, out)

    write()
    report = Reporter()
    state = FitState()
    eval_batch = int(arch["train"]["eval_batch_size"])

    def on_epoch(epoch: int, epochs: int, fit_record: dict[str, float]) -> None:
        accuracy = float(fit_record["val_accuracy"])
        record["epochs_trained"] = epoch
        record["accuracy_by_epoch"][str(epoch)] = accuracy
        if epoch >= epochs:
            write()  # the last epoch is reported after the full evaluation and the sweep
            return
        x_val = state.task.val[0]
        idx = subset_indices(int(x_val.shape[0]))
        x = x_val[idx].to(state.device)
        flops = interim_metrics(state.model, x, ["flops"], eval_batch)["flops"]
        record["interim_flops_by_epoch"][str(epoch)] = flops
        write()
        report(epoch=epoch, error=1.0 - accuracy, flops_norm=flops / flops_ref,
               accuracy=accuracy, flops=flops)

    result = run_trial(spec, on_epoch=on_epoch, fit_state=state)
    values = result.values(spec.objectives)
    if not result.ok or values is None:
        record["error"] = result.error or f"non-finite objectives {result.metrics}"
        write()
        raise SystemExit(f"trial {trial_id} failed: {record['error']}")
    final = dict(zip([n for n, _ in spec.objectives], values))
    record.update(finished=True, final=final,
                  derived=[{"knobs": d.knobs, "accuracy": float(d.metrics["accuracy"]),
                            "flops": float(d.metrics["flops"])} for d in result.derived])
    write()
    report(epoch=record["epochs_trained"], error=1.0 - final["accuracy"],
           flops_norm=final["flops"] / flops_ref, accuracy=final["accuracy"],
           flops=final["flops"])


# ---- the driver ---------------------------------------------------------------------------------


def ranked_priority() -> Any:
    """Syne Tune's `NonDominatedPriority` with its result turned into per-item ranks.

    In Syne Tune 0.16.0 `NonDominatedPriority` returns the items' *order* (item indices, best
    first), while ASHA's `Bracket.on_result` reads the array as each item's *priority* and takes
    the last entry as the new result's: the decision then depends on which index comes last in
    the order, not on where the new result ranks (a result that dominates every other one at the
    rung can be stopped). This priority returns, for each item, its position in that same order,
    which is what the Bracket expects; the order itself (non-dominated fronts, then Syne Tune's
    epsilon-net within a front) is Syne Tune's."""
    import numpy as np
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import (
        NonDominatedPriority,
    )

    class RankedNonDominatedPriority(NonDominatedPriority):
        def priority_unsafe(self, objectives: Any) -> Any:
            order = np.asarray(super().priority_unsafe(objectives), dtype=int)
            ranks = np.empty(len(order), dtype=float)
            ranks[order] = np.arange(len(order), dtype=float)
            return ranks

    return RankedNonDominatedPriority()


def _put_on_pythonpath(*folders: str) -> None:
    """The trial subprocesses import syne_tune and condsearch as this process does."""
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for folder in folders:
        if folder not in current:
            current.append(folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(current)


def run_arm(space: Any, space_path: str, overrides: list[str], workdir: Path, seed: int,
            budget: int, flops_ref: float, settings: dict[str, Any], sweep: bool = True,
            ranked: bool = False, sleep_time: float = 0.2) -> dict[str, Any]:
    """Run Syne Tune's MOASHA until `budget` epochs were reported; return the arm's summary
    (wall time, trial count) and write it to `workdir/done.json` with `settings`.

    `ranked`: MOASHA with `ranked_priority()` instead of its default `NonDominatedPriority`."""
    import numpy as np
    import syne_tune
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import PythonBackend
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    workdir = workdir.resolve()
    for path in (space_path, str(workdir), str(HERE)):
        if " " in path:
            raise ValueError(f"Syne Tune's LocalBackend splits its command line on spaces: "
                             f"{path!r} must have none")
    mo_asha = space.mo_asha or {}
    workdir.mkdir(parents=True, exist_ok=True)
    plan_path = workdir / PLAN_FILE
    plan_path.write_text(json.dumps({"space": space_path, "overrides": overrides, "seed": seed,
                                     "sweep": sweep, "flops_reference": flops_ref}))
    st_space, _ = config_space(space)
    st_space.update(cs_plan=str(plan_path), cs_module_dir=str(HERE))
    _put_on_pythonpath(str(Path(syne_tune.__file__).resolve().parents[1]),
                       str(HERE.parents[1]))
    os.environ["SYNETUNE_FOLDER"] = str(workdir)
    # MOASHA draws its random configurations from numpy's global generator.
    np.random.seed(seed)
    scheduler = MOASHA(config_space=st_space, metrics=["error", "flops_norm"], do_minimize=True,
                       time_attr="epoch", max_t=int(mo_asha["max_epochs"]),
                       grace_period=int(mo_asha["min_epochs"]),
                       reduction_factor=float(mo_asha["reduction_factor"]),
                       brackets=int(mo_asha.get("brackets", 1)), random_seed=seed,
                       multiobjective_priority=ranked_priority() if ranked else None)
    backend = PythonBackend(tune_function=condsearch_trial, config_space=st_space)
    # Stop once `budget` epochs were reported (each report is one trained epoch); the trial
    # running then is killed, its reported epochs counted.
    stop = StoppingCriterion(max_num_evaluations=budget - 1,
                             max_num_trials_started=50 * budget)
    tuner = Tuner(trial_backend=backend, scheduler=scheduler, stop_criterion=stop, n_workers=1,
                  sleep_time=sleep_time, print_update_interval=600.0, max_failures=budget,
                  tuner_name="moasha", suffix_tuner_name=False, save_tuner=False,
                  trial_backend_path=str(workdir / "trials"))
    started = time.time()
    # Syne Tune looks for GPUs by writing nvidia-smi's output to ./std.out: keep it in the arm's
    # folder (every path the arm uses is absolute).
    with contextlib.chdir(workdir):
        tuner.run()
    seconds = time.time() - started
    info = {"workdir": str(workdir), "seconds": seconds, "started": started, "budget": budget,
            "settings": settings, "syne_tune": version()}
    (workdir / "done.json").write_text(json.dumps(info))
    return info


def read_trials(workdir: Path) -> list[dict[str, Any]]:
    """Every trial the arm ran, by trial id, as its `condsearch_trial.json` recorded it."""
    trials = []
    for path in (workdir / "trials").glob(f"*/{TRIAL_FILE}"):
        record = json.loads(path.read_text())
        record.setdefault("error", None)
        trials.append(record)
    trials.sort(key=lambda r: int(r["trial_id"]))
    return trials


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
