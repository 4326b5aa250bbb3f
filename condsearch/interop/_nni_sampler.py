"""An Optuna sampler whose proposals come from one of NNI's tuners.

The tuner proposes a full parameter set per trial; the sampler serves its values as the trial
asks for them, so `SearchSpace.sample`, both backends, the study, MLflow and the front work
exactly as with Optuna's samplers. NNI's tuners optimize one number, so a trial's objectives are
folded into one score (see `fold_score`) when it is reported back.

`make_sampler` finds `nni_sampler` through the entry point `nni` of the group
`condsearch.samplers` (pyproject.toml); importing this module also registers it. It imports only
the public `condsearch.orchestrate` package, which never imports this one back.
"""

from __future__ import annotations

import json
import logging
import math
import random
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from condsearch._names import (
    ATTR_DERIVED_FROM,
    ATTR_METRICS,
    ATTR_NNI_PARAMS,
    CONSTRAINT_METRICS,
    NNI_TUNERS,
    OBJECTIVE_METRICS,
)
from condsearch.interop._nni_format import ConvertError, space_to_nni
from condsearch.orchestrate import SearchError, register_sampler, set_trial_system_attr

INSTALL_NNI = 'pip install "condsearch[nni]"'


class NniUnavailable(SearchError):
    """NNI (or a package one of its tuners needs) is not installed."""


def require_nni(what: str, tuner: str | None = None) -> None:
    """Import NNI (and hyperopt for the anneal tuner) or say which command installs them."""
    try:
        import nni  # noqa: F401

        if tuner == "anneal":
            import hyperopt  # noqa: F401
    except ImportError as exc:
        raise NniUnavailable(f"{what} needs NNI, an optional extra of condsearch; install it "
                             f"with: {INSTALL_NNI}  (import failed: {exc})") from None
    # NNI logs every proposal and trial end at INFO on stdout; a search has its own progress.
    logging.getLogger("nni").setLevel(logging.WARNING)


def fold_score(values: dict[str, float], objectives: list[tuple[str, str]],
               budgets: dict[str, float], penalty: float) -> float:
    """One number for NNI's tuner, in the style of NNI's ProfilerPenalty (positive, add):

        score = sum of the maximized objectives - penalty * sum over costs c of max(0, c / budget_c - 1)

    `values` holds every objective and constrained metric by name; `budgets` names each cost."""
    score = sum(values[name] for name, d in objectives if d == "maximize")
    for name, budget in budgets.items():
        score -= penalty * max(0.0, values[name] / budget - 1.0)
    return score


class NniSampler(optuna.samplers.BaseSampler):
    """Optuna sampler driven by NNI's `tpe`, `evolution`, `anneal` or `random` tuner.

    Every trial the space samples gets one `generate_parameters` call; its result is reported
    (`receive_trial_result`) with the folded score of the best of the trial's points (its own and
    the derived points of its knob sweep: the sweep is free once a model is trained). Failed
    trials end as failures. Derived points enter the study without being proposed and are never
    asked for. A resumed search replays the earlier proposals into the tuner.
    """

    def __init__(self, tuner: str, space: Any, seed: int, options: dict[str, Any] | None = None,
                 budget: dict[str, float] | None = None, penalty: float = 1.0) -> None:
        if tuner not in NNI_TUNERS:
            raise ValueError(f"unknown NNI tuner {tuner!r}; known: {', '.join(NNI_TUNERS)}")
        require_nni(f"sampler {{nni: {tuner}}}", tuner)
        self.tuner_name = tuner
        self.objectives: list[tuple[str, str]] = list(space.objectives)
        self.penalty = float(penalty)
        self._budget = dict(budget or {})
        costs = [name for name, d in self.objectives if d == "minimize"]
        bounds = {metric: space.constraints.get(c) for c, metric in CONSTRAINT_METRICS.items()}
        self._costs = costs + [m for m, b in bounds.items() if b and m not in costs]
        self._bounds = {m: float(b) for m, b in bounds.items() if b}
        self._baseline: dict[str, float] | None = None
        try:
            self.search_space, _ = space_to_nni(space, include_fixed=False)
        except ConvertError as exc:
            raise SearchError(f"NNI's {tuner} tuner cannot search this space, which NNI's "
                              "format cannot express:\n" + "\n".join(exc.problems)) from None
        self._py_random = random.Random(seed).getstate()
        self._tuner = self._make_tuner(seed, dict(options or {}))
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._proposed: dict[int, dict[str, Any]] = {}
        self._params: dict[int, dict[str, Any]] = {}
        self._pending: set[int] = set()
        self._replayed = False
        self._warned: set[str] = set()

    def __str__(self) -> str:
        return f"NniSampler({self.tuner_name})"

    def _make_tuner(self, seed: int, options: dict[str, Any]) -> Any:
        import numpy as np

        mode = "maximize"
        try:
            if self.tuner_name == "tpe":
                from nni.algorithms.hpo.tpe_tuner import TpeTuner

                tuner = TpeTuner(optimize_mode=mode, seed=seed, **options)
            elif self.tuner_name == "random":
                from nni.algorithms.hpo.random_tuner import RandomTuner

                tuner = RandomTuner(seed=seed, optimize_mode=mode, **options)
            elif self.tuner_name == "anneal":
                from nni.algorithms.hpo.hyperopt_tuner import HyperoptTuner

                tuner = HyperoptTuner("anneal", optimize_mode=mode, **options)
            else:
                from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

                tuner = EvolutionTuner(optimize_mode=mode, **options)
        except TypeError as exc:
            raise SearchError(f"NNI's {self.tuner_name} tuner refused the options "
                              f"{options}: {exc}") from None
        with self._own_random():
            tuner.update_search_space(self.search_space)
            # Neither tuner takes a seed: seed the random states they draw from ourselves.
            if self.tuner_name == "anneal":
                tuner.rval.rstate = np.random.RandomState(seed)
            elif self.tuner_name == "evolution":
                tuner.random_state = np.random.RandomState(seed)
                tuner.population = []
                for _ in range(tuner.population_size):
                    tuner._random_generate_individual()
        return tuner

    @contextmanager
    def _own_random(self) -> Iterator[None]:
        """Run tuner code on this sampler's own `random` state (the evolution tuner shuffles
        with the global one), leaving the process's state as it was."""
        outer = random.getstate()
        random.setstate(self._py_random)
        try:
            yield
        finally:
            self._py_random = random.getstate()
            random.setstate(outer)

    # ---- Optuna's sampler interface ----------------------------------------------------------

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if trial.number not in self._proposed:
            self._propose(study, trial)
        flat = self._proposed[trial.number]
        if not flat:  # the tuner had no proposal for this trial (already warned)
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        if param_name in flat:
            value = _to_optuna(flat[param_name], param_distribution)
            if value is not _NO_VALUE:
                return value
        self._warn(param_name, f"NNI's tuner proposed no valid value for {param_name} "
                               f"(got {flat.get(param_name)!r}); it is drawn at random")
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        if trial.number not in self._params:
            return
        if state == TrialState.COMPLETE and values is not None:
            # Its sweep's derived points enter the study after this call, so the tuner hears
            # the result just before it proposes again.
            self._pending.add(trial.number)
            return
        self._params.pop(trial.number)
        with self._own_random():
            self._tuner.trial_end(trial.number, False)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    # ---- the tuner's side --------------------------------------------------------------------

    def _propose(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self._replayed:
            self._replayed = True
            self._replay(study)
        self._report_pending(study)
        with self._own_random():
            proposed = self._tuner.generate_multiple_parameters([trial.number],
                                                                st_callback=lambda *_: None)
        if not proposed:
            # The evolution tuner proposes nothing while a whole population is running.
            self._warn("(population)", f"NNI's {self.tuner_name} tuner had no proposal for "
                                       f"trial {trial.number}; it is drawn at random (raise "
                                       "population_size above search.concurrency)")
            self._proposed[trial.number] = {}
            return
        params = _plain(proposed[0])
        if hasattr(self._tuner, "total_data"):
            # hyperopt keeps numpy scalars here, which its own result bookkeeping then
            # compares with `== []`; plain numbers keep that working under numpy 2.
            self._tuner.total_data[trial.number] = _plain(self._tuner.total_data[trial.number])
        set_trial_system_attr(study, trial, ATTR_NNI_PARAMS, params)
        self._params[trial.number] = params
        self._proposed[trial.number] = flatten_parameters(params)

    def _report_pending(self, study: optuna.Study) -> None:
        if not self._pending:
            return
        scores = self._scores(study, self._pending)
        for number in sorted(self._pending):
            params = self._params.pop(number)
            with self._own_random():
                if number in scores:
                    self._tuner.receive_trial_result(number, params, scores[number])
                self._tuner.trial_end(number, number in scores)
        self._pending.clear()

    def _replay(self, study: optuna.Study) -> None:
        """Give a fresh tuner the results of the proposals made before this process started."""
        earlier = {t.number: t.system_attrs[ATTR_NNI_PARAMS] for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if ATTR_NNI_PARAMS in t.system_attrs}
        if not earlier:
            return
        scores = self._scores(study, set(earlier))
        data = [{"parameter": earlier[n], "value": s} for n, s in sorted(scores.items())]
        try:
            with self._own_random():
                self._tuner.import_data(data)
        except (KeyError, ValueError, IndexError) as exc:
            warnings.warn(f"NNI's {self.tuner_name} tuner could not replay the study's earlier "
                          f"trials (has the space changed?): {exc}; it starts afresh",
                          stacklevel=2)

    def _scores(self, study: optuna.Study, numbers: set[int]) -> dict[int, float]:
        """Each trained trial's folded score: the best over its own and its derived points."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        budgets = self._budgets(complete)
        scores: dict[int, float] = {}
        for t in complete:
            origin = t.user_attrs.get(ATTR_DERIVED_FROM, t.number)
            if origin not in numbers or t.values is None:
                continue
            score = fold_score(self._point(t), self.objectives, budgets, self.penalty)
            if math.isfinite(score):
                scores[origin] = max(score, scores.get(origin, -math.inf))
        return scores

    def _point(self, trial: FrozenTrial) -> dict[str, float]:
        metrics = trial.user_attrs.get(ATTR_METRICS) or {}
        values = {name: float(v) for (name, _), v in zip(self.objectives, trial.values)}
        for cost in self._costs:
            if cost not in values:
                values[cost] = float(metrics.get(OBJECTIVE_METRICS.get(cost, cost), math.nan))
        return values

    def _budgets(self, complete: list[FrozenTrial]) -> dict[str, float]:
        """Each cost's budget: the space's `sampler.budget`, else its constraint's bound, else its
        value on the study's first trained trial (NNI's baseline, fixed once the study has one)."""
        if self._baseline is None:
            first = min((t for t in complete if ATTR_DERIVED_FROM not in t.user_attrs),
                        key=lambda t: t.number, default=None)
            if first is not None:
                self._baseline = self._point(first)
        out = {}
        for cost in self._costs:
            budget = self._budget.get(cost) or self._bounds.get(cost) or (
                (self._baseline or {}).get(cost))
            if budget and math.isfinite(budget) and budget > 0:
                out[cost] = float(budget)
        return out

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)


def nni_sampler(spec: dict[str, Any], seed: int, space: Any) -> NniSampler:
    """The sampler-registry factory for `sampler: {nni: TUNER}`: the tuner, its options, the
    budget and penalty its single score folds the objectives with."""
    if space is None:
        raise ValueError("an NNI tuner needs the search space; pass space=")
    return NniSampler(spec["nni"], space, seed, spec.get("options"), budget=spec.get("budget"),
                      penalty=spec.get("penalty", 1.0))


def flatten_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """An NNI parameter set as condsearch parameter names: a nested choice's `_name` is the value
    of its key (`model.backbone`, a component's `enabled`), its other keys sit beside it."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key == "_name":
            continue
        if isinstance(value, dict) and "_name" in value:
            out[key] = value["_name"]
            out.update(flatten_parameters(value))
        else:
            out[key] = value
    return out


_NO_VALUE = object()


def _to_optuna(value: Any, dist: BaseDistribution) -> Any:
    """NNI's value in the form the Optuna distribution holds, or _NO_VALUE when it has none."""
    if isinstance(dist, CategoricalDistribution):
        candidates = [value]
        if isinstance(value, str):
            try:
                candidates.append(json.loads(value))
            except json.JSONDecodeError:
                pass
        else:
            candidates.append(json.dumps(value))
        for candidate in candidates:
            for choice in dist.choices:
                if type(choice) is type(candidate) and choice == candidate:
                    return choice
        return _NO_VALUE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return _NO_VALUE
    if isinstance(dist, IntDistribution):
        snapped = dist.low + round((round(value) - dist.low) / dist.step) * dist.step
        return int(min(max(snapped, dist.low), dist.high))
    if isinstance(dist, FloatDistribution):
        x = float(value)
        if dist.step is not None:
            x = dist.low + round((x - dist.low) / dist.step) * dist.step
        return min(max(x, dist.low), dist.high)
    return _NO_VALUE


def _plain(value: Any) -> Any:
    """NNI's proposal as plain JSON data (the tuners hand back numpy scalars)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


register_sampler("nni", nni_sampler)
