"""SearchSpace: a validated search-space file, and how a trial samples an architecture from it."""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from condsearch._names import OBJECTIVES
from condsearch.schedule import rung_levels
from condsearch.space._bounds import check_memory, check_sweep, check_train_length
from condsearch.space._declaration import Backbone, CheckContext
from condsearch.space._distributions import (
    Choice,
    Distribution,
    Fixed,
    ParamSpec,
    number_hint,
    parse_param,
    show,
    suggest_key,
)
from condsearch.space._errors import OVERRIDE_FILE, Problem, SpaceError, dotted
from condsearch.space._io import known_io
from condsearch.space._limits import MAX_CHARS, LimitExceeded, compose, size_message
from condsearch.space._lines import LineMap
from condsearch.space._overrides import Override, apply_overrides
from condsearch.space._registry import (
    BackboneUnavailable,
    find_backbone,
    is_import_path,
    known_names,
)
from condsearch.space._schema import (
    NNI_TUNERS,
    SAMPLERS,
    SWEEP_KNOBS,
    TRAIN_PARAMS,
    ConstraintsSpec,
    SearchSpec,
    SpaceDocument,
    TaskSpec,
    model_at,
)
from condsearch.space.declared import BUILTIN_BACKBONES, BUILTIN_COMPONENTS

PathT = tuple[str | int, ...]
Params = dict[str, Distribution]
BACKBONE_NAME = ParamSpec("str", doc="a backbone name, or a factory as 'package.module:function'")
#: a key a user's backbone does not declare: any value, sampled and passed as written
UNDECLARED = ParamSpec("any")
_RESERVED = ("backbone", "components")


@dataclass
class ModelPlan:
    """The parsed `model` section: the backbone choice and, for each backbone it can pick, its
    declaration (None for an import path not yet trusted) and keys; the components' keys."""

    backbone: Distribution
    declarations: dict[str, Backbone | None]
    keys: dict[str, Params]
    components: dict[str, Params]

    def section(self, name: str) -> str | None:
        decl = self.declarations[name]
        return decl.section if decl is not None else None

    def hosts(self, name: str) -> tuple[str, ...]:
        decl = self.declarations[name]
        return decl.hosts if decl is not None else tuple(self.components)


class SearchSpace:
    """A validated search space: what to search, on which task, for which objectives, and how.

    `sample(trial)` turns an Optuna trial into an arch dict, the plain nested dict that
    `build_model` reads and export writes out.
    """

    def __init__(self, doc: SpaceDocument, model: ModelPlan, train: Params, path: str | None,
                 source: str, overrides: list[str] | None = None, lines: LineMap | None = None,
                 applied: list[Override] | None = None) -> None:
        self.name: str = doc.name
        self.path = path
        self.source = source
        self.overrides = list(overrides or [])
        #: where each key came from (the file's lines, the applied `--set`s), for `problem`
        self._lines = lines if lines is not None else LineMap(None)
        self._applied = list(applied or [])
        self._plan = model
        #: the backbones a trial can get, in the order the space lists them
        self.backbones: list[str] = list(model.backbone.values())
        self.task: dict[str, Any] = doc.task.model_dump()
        self.objectives: list[tuple[str, str]] = [(o, OBJECTIVES[o]) for o in doc.objectives]
        self.constraints: dict[str, float | None] = {
            k: (None if v is None else float(v)) for k, v in doc.constraints.model_dump().items()
        }
        self.sampler: dict[str, Any] = _sampler(doc)
        self.sweep: dict[str, list[float]] = {k: [float(x) for x in v] for k, v in doc.sweep.items()}
        self.trials: int = doc.search.trials
        self.seed: int = doc.search.seed
        #: how trials run: concurrency, cpus/gpus per trial, max_retries (ray backend),
        #: trial_timeout and max_memory_gb (both backends)
        self.execution: dict[str, Any] = doc.search.model_dump(exclude={"trials", "seed"})
        self._train = train

    def __repr__(self) -> str:
        return f"SearchSpace(name={self.name!r}, path={self.path!r})"

    def problem(self, key: tuple[str | int, ...], message: str) -> Problem:
        """A problem with this space found after validation (by a check that needs what the
        file cannot say: the backend, the cluster), placed as validation places one: at the
        `file:line` its key sits on, or at the `--set` that set it."""
        return _place(self.path or "<string>", self._lines, self._applied, key, message)

    @property
    def workers_per_trial(self) -> int:
        """Data-parallel processes training each trial (`search.workers_per_trial`)."""
        return int(self.execution.get("workers_per_trial", 1))

    @property
    def mo_asha(self) -> dict[str, Any] | None:
        """MO-ASHA's settings when `search.scheduler.mo_asha` is on (min_epochs,
        reduction_factor, brackets, and max_epochs: train.epochs, the last rung), else None."""
        scheduler = self.execution.get("scheduler") or {}
        if scheduler.get("mo_asha") is None:
            return None
        epochs = self._train["epochs"]
        assert isinstance(epochs, Fixed)  # validated: one train.epochs for every trial
        return {**scheduler["mo_asha"], "max_epochs": int(epochs.value)}

    @property
    def folder(self) -> str | None:
        """The folder of the space's file, where import paths it names are also looked for."""
        return str(Path(self.path).resolve().parent) if self.path else None

    @property
    def code_paths(self) -> list[str]:
        """Folders a trial searches for the code the space names by import path (a backbone or
        a data factory): its file's folder."""
        named = any(is_import_path(name) for name in [*self.backbones, self.task["dataset"]])
        return [self.folder] if named and self.folder else []

    @property
    def untrusted(self) -> list[str]:
        """Backbones named by an import path whose declarations were not read (not trusted)."""
        return [n for n, d in self._plan.declarations.items() if d is None]

    def trusted(self) -> SearchSpace:
        """This space with its import-path backbones imported and their declared keys checked
        (SpaceError at `file:line` otherwise): a space that names `module:function` is code."""
        if not self.untrusted:
            return self
        return parse_space(self.source, self.path or "<string>", self.overrides, trust_code=True)

    def declaration(self, backbone: str) -> Backbone:
        """The declaration of one of the space's backbones (imports an untrusted import path)."""
        decl = self._plan.declarations[backbone]
        return decl if decl is not None else find_backbone(backbone, self.folder)

    def distributions(self) -> dict[str, Distribution]:
        """Every searchable key by its Optuna parameter name (`model.dim`, `train.lr`, ...)."""
        out: dict[str, Distribution] = {"model.backbone": self._plan.backbone}
        for name, keys in self._plan.keys.items():
            prefix = _prefix(self._plan.section(name))
            out.update({f"{prefix}{k}": d for k, d in keys.items()})
        for comp, params in self._plan.components.items():
            out.update({f"model.components.{comp}.{k}": d for k, d in params.items()})
        out.update({f"train.{k}": d for k, d in self._train.items()})
        return out

    def sample(self, trial: Any) -> dict[str, Any]:
        """Suggest every searched value from an Optuna trial; a switched-off component's are skipped."""
        return self._resolve(lambda dist, name: dist.suggest(trial, name))

    def fixed_arch(self) -> dict[str, Any]:
        """The one arch of a space whose values are all fixed; SpaceError names what is not."""
        searched: list[str] = []

        def pick(dist: Distribution, name: str) -> Any:
            if not isinstance(dist, Fixed):
                searched.append(name)
                return dist.values()[0] if isinstance(dist, Choice) else getattr(dist, "lo", None)
            return dist.suggest(None, name)

        arch = self._resolve(pick)
        if searched:
            raise SpaceError([
                Problem(self.path or "<string>", 1, name, "is searched, so the space has no single arch")
                for name in searched
            ])
        return arch

    def _resolve(self, pick: Any) -> dict[str, Any]:
        plan = self._plan
        backbone = pick(plan.backbone, "model.backbone")
        train = {k: pick(d, f"train.{k}") for k, d in self._train.items()}
        section = plan.section(backbone)
        prefix = _prefix(section)
        keys = {k: pick(d, f"{prefix}{k}") for k, d in plan.keys[backbone].items()}
        model: dict[str, Any] = {"backbone": backbone}
        if section is None:
            model.update(keys)
        else:
            model[section] = keys
        hosted = [c for c in plan.components if c in plan.hosts(backbone)]
        if hosted:
            components: dict[str, Any] = {}
            excluded: set[str] = set()
            for comp in hosted:
                params = plan.components[comp]
                at = f"model.components.{comp}"
                if comp in excluded or not pick(params["enabled"], f"{at}.enabled"):
                    components[comp] = {"enabled": False}
                    continue
                rest = {k: pick(d, f"{at}.{k}") for k, d in params.items() if k != "enabled"}
                components[comp] = {"enabled": True, **rest}
                excluded.update(BUILTIN_COMPONENTS[comp].excludes)
            model["components"] = components
        return {"model": model, "train": train}

    def to_dict(self) -> dict[str, Any]:
        """The validated document as plain data, defaults filled in; it parses back to this space."""
        plan = self._plan
        model: dict[str, Any] = {"backbone": plan.backbone.to_plain()}
        for name, keys in plan.keys.items():
            plain = {k: d.to_plain() for k, d in keys.items()}
            section = plan.section(name)
            if section is None:
                model.update(plain)
            else:
                model[section] = plain
        if plan.components:
            model["components"] = {comp: {k: d.to_plain() for k, d in params.items()}
                                   for comp, params in plan.components.items()}
        return {
            "name": self.name,
            "task": copy.deepcopy(self.task),
            "model": model,
            "objectives": [name for name, _ in self.objectives],
            "constraints": dict(self.constraints),
            "train": {k: d.to_plain() for k, d in self._train.items()},
            "sampler": ({k: copy.deepcopy(v) for k, v in self.sampler.items() if k != "name"}
                        if "nni" in self.sampler else copy.deepcopy(self.sampler)),
            "sweep": copy.deepcopy(self.sweep),
            "search": {"trials": self.trials, "seed": self.seed, **self.execution},
        }


def _prefix(section: str | None) -> str:
    return "model." if section is None else f"model.{section}."


def _sampler(doc: SpaceDocument) -> dict[str, Any]:
    """The sampler as plain data; an NNI tuner's name reads `nni:<tuner>` (for logs and runs)."""
    spec = doc.sampler
    if spec.nni is None:
        return {"name": spec.name, "options": copy.deepcopy(spec.options)}
    return {"name": f"nni:{spec.nni}", "nni": spec.nni, "options": copy.deepcopy(spec.options),
            "budget": dict(spec.budget), "penalty": spec.penalty}


def load_space(path: str | Path, overrides: list[str] | None = None,
               trust_code: bool = False) -> SearchSpace:
    """Read and validate a search-space YAML file; SpaceError lists every problem found.

    A backbone named by import path (`package.module:function`) is code: it is imported, and
    the keys it declares checked, only with `trust_code` (`SearchSpace.trusted()` does it later).
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(MAX_CHARS + 1)  # never more: a file past the limit is refused unread
            size = os.fstat(file.fileno()).st_size if len(text) > MAX_CHARS else 0
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SpaceError([Problem(str(path), 1, "(file)", f"cannot read the file: {reason}")]) from None
    if len(text) > MAX_CHARS:
        message = size_message(size, "bytes") if size > MAX_CHARS else size_message(len(text))
        raise SpaceError([Problem(str(path), 1, "(file)", message)])
    return parse_space(text, str(path), overrides, trust_code)


def parse_space(text: str, path: str = "<string>", overrides: list[str] | None = None,
                trust_code: bool = False) -> SearchSpace:
    """Validate search-space YAML text; `path` names the file in messages and is where import
    paths are also looked for (see `load_space` for `trust_code`)."""
    try:
        # one composed graph, checked against the limits before anything expands its aliases
        root, loader = compose(text)
        try:
            lines = LineMap(root)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except LimitExceeded as err:
        raise SpaceError([Problem(path, err.line, err.key, err.message)]) from None
    except yaml.YAMLError as err:
        raise SpaceError([_syntax_problem(path, err)]) from None
    near = str(Path(path).resolve().parent) if path != "<string>" else None
    check = _Checker(path, lines, near, trust_code)
    for dup_path, line, first in lines.duplicates:
        check.problems.append(Problem(path, line, dotted(dup_path),
                                      f"duplicate key; it is already set on line {first}"))
    if data is None and not overrides:
        check.add((), "empty search space; expected a mapping with at least name, task and model")
        raise check.error()
    data, check.applied, override_problems = apply_overrides(data, list(overrides or []))
    for number, key, message in override_problems:
        check.problems.append(Problem(OVERRIDE_FILE, number, key, message))
    if not isinstance(data, dict):
        check.add((), f"expected a mapping of keys (name, task, model, ...), got {show(data)}")
        raise check.error()
    doc = check.document(data)
    plan, train = check.params(data)
    check.cross(data, plan)
    if not check.problems:  # the bounds read valid keys only
        check.bounds(data, plan, train)
    if check.problems:
        raise check.error()
    # no problems means every part validated
    assert doc is not None and plan is not None
    return SearchSpace(doc, plan, train, None if path == "<string>" else path, text, overrides,
                       lines, check.applied)


def _syntax_problem(path: str, err: yaml.YAMLError) -> Problem:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f" (column {mark.column + 1})" if mark is not None else ""
    return Problem(path, line, "yaml", f"invalid YAML: {problem}{where}" + (f", {context}" if context else ""))


_TYPE_WORDS = {
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "string_type": "a string", "bool_type": "true or false", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping", "list_type": "a list",
    "finite_number": "a finite number",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_LITERALS = {("sampler", "name"): ("sampler", SAMPLERS),
             ("sampler", "nni"): ("NNI tuner", tuple(NNI_TUNERS))}


def _place(path: str, lines: LineMap, applied: list[Override], key: PathT,
           message: str) -> Problem:
    """A problem at `key`: at the last `--set` that set it, else at its line of the file."""
    for override in reversed(applied):
        if override.owns(key):
            return Problem(OVERRIDE_FILE, override.number, dotted(key), message)
    return Problem(path, lines.line(key), dotted(key), message)


class _Checker:
    """Collects problems, each placed at the line (or `--set`) its key came from."""

    def __init__(self, path: str, lines: LineMap, near: str | None = None,
                 trust_code: bool = False) -> None:
        self.path, self.lines = path, lines
        self.near, self.trust_code = near, trust_code
        self.applied: list[Override] = []
        self.problems: list[Problem] = []

    def add(self, key: PathT, message: str) -> None:
        self.problems.append(_place(self.path, self.lines, self.applied, key, message))

    def error(self) -> SpaceError:
        order = sorted(self.problems, key=lambda p: (p.file == OVERRIDE_FILE, p.line))
        return SpaceError(list(dict.fromkeys(order)))

    def document(self, data: dict[str, Any]) -> SpaceDocument | None:
        try:
            return SpaceDocument.model_validate(data)
        except ValidationError as err:
            sampler_by_name = isinstance(data.get("sampler"), str)
            for e in err.errors():
                loc = tuple(e["loc"])
                if sampler_by_name and loc[:1] == ("sampler",):
                    loc = ("sampler",)
                    e = {**e, "loc": ("sampler", "name")}
                self.add(loc, _pydantic_message(e))
            return None

    def params(self, data: dict[str, Any]) -> tuple[ModelPlan | None, Params]:
        """Parse every searchable key: the model's (None when any is invalid) and train's."""
        raw_train = data.get("train") if isinstance(data.get("train"), dict) else {}
        train = self._section(("train",), raw_train, TRAIN_PARAMS) or {}
        raw_model = data.get("model")
        if not isinstance(raw_model, dict):
            return None, train  # the schema reports it
        backbone, declarations = self._backbones(raw_model)
        if backbone is None:
            return None, train
        names = list(declarations)
        flat = [n for n in names if declarations[n] is None or declarations[n].section is None]
        if len(flat) > 1:
            self.add(("model", "backbone"),
                     f"{flat[0]} and {flat[1]} both keep their keys directly under model, so one "
                     "space cannot choose between them; register one with a section "
                     "(condsearch.register_backbone(..., section=NAME))")
            return None, train
        sections = {declarations[n].section: n for n in names if n not in flat}
        ok = True
        keys: dict[str, Params] = {}
        loose = {k: v for k, v in raw_model.items() if k not in _RESERVED and k not in sections}
        for key in [k for k in loose if k in _ALL_SECTIONS]:
            self.add(("model", key), f"configures the {_ALL_SECTIONS[key]} backbone, and this "
                                     f"space's backbone is {_either(names)}")
            loose.pop(key)
            ok = False
        if flat:
            parsed = self._declared(("model",), loose, declarations[flat[0]])
            ok = ok and parsed is not None
            keys[flat[0]] = parsed or {}
        else:
            for key in loose:
                self.add(("model", key), _stray_key(key, names))
                ok = False
        for section, name in sections.items():
            raw = raw_model.get(section)
            parsed = self._declared(("model", section), raw if isinstance(raw, dict) else {},
                                    declarations[name])
            ok = ok and parsed is not None
            keys[name] = parsed or {}
        components = self._components(raw_model, declarations)
        if components is None or not ok:
            return None, train
        return ModelPlan(backbone, declarations, keys, components), train

    def _backbones(self, raw_model: dict[str, Any]
                   ) -> tuple[Distribution | None, dict[str, Backbone | None]]:
        """The backbone choice and each name's declaration; (None, {}) when any is unusable."""
        if "backbone" not in raw_model:
            self.add(("model", "backbone"), "missing required field")
            return None, {}
        dist, issues = parse_param(raw_model["backbone"], BACKBONE_NAME)
        for sub, message in issues:
            self.add(("model", "backbone", *sub), message)
        if dist is None:
            return None, {}
        declarations: dict[str, Backbone | None] = {}
        for i, name in enumerate(dist.values()):
            where: PathT = ("model", "backbone") if isinstance(dist, Fixed) else (
                "model", "backbone", "choice", i)
            try:
                declarations[name] = find_backbone(name, self.near, self.trust_code)
            except BackboneUnavailable as exc:
                message = str(exc)
                if message == f"unknown backbone {name!r}":
                    hint = suggest_key(name, known_names(), "expected one of")
                    if not hint.startswith("did you mean"):
                        hint += ", or a factory as 'package.module:function'"
                    message += "; " + hint
                self.add(where, message)
        if len(declarations) < len(dist.values()):
            return None, {}
        return dist, declarations

    def _declared(self, at: PathT, raw: dict[str, Any], decl: Backbone | None) -> Params | None:
        """A backbone's keys: declared ones checked against their declaration; undeclared ones
        (a user's backbone that is not strict) taken as written, unless one looks like a typo."""
        specs = decl.params if decl is not None else {}
        out = self._section(at, {k: v for k, v in raw.items() if k in specs}, specs)
        ok = out is not None
        for key, value in raw.items():
            if key in specs:
                continue
            if decl is not None and (decl.strict or _close(key, list(specs))):
                hint = suggest_key(key, list(specs)) if specs else f"{decl.name} declares no keys"
                self.add((*at, key), f"unknown key; {hint}")
                ok = False
                continue
            dist, issues = parse_param(value, UNDECLARED)
            for sub, message in issues:
                self.add((*at, key, *sub), message)
            if dist is None:
                ok = False
            elif out is not None:
                out[key] = dist
        return out if ok else None

    def _components(self, raw_model: dict[str, Any],
                    declarations: dict[str, Backbone | None]) -> dict[str, Params] | None:
        """The keys of every built-in component a backbone of the space can host."""
        hostable = [c for c in BUILTIN_COMPONENTS if any(
            d is None or c in d.hosts for d in declarations.values())]
        raw_comps = raw_model.get("components", {})
        if raw_comps is None:
            raw_comps = {}
        if not isinstance(raw_comps, dict):
            self.add(("model", "components"), f"expected a mapping, got {_short(show(raw_comps))}")
            return None
        if raw_comps and not hostable:
            hosts = [b.name for b in BUILTIN_BACKBONES.values() if b.hosts]
            self.add(("model", "components"),
                     f"applies to the {_either(hosts)} backbone only, and this space's backbone "
                     f"is {_either(list(declarations))}")
            return None
        ok = True
        for comp in raw_comps:
            if comp not in BUILTIN_COMPONENTS:
                self.add(("model", "components", comp), f"unknown component {comp!r}; "
                         f"{suggest_key(comp, list(BUILTIN_COMPONENTS), 'known components are')}")
                ok = False
            elif comp not in hostable:
                hosted = sorted({h for d in declarations.values() if d for h in d.hosts})
                self.add(("model", "components", comp),
                         f"no backbone of this space hosts {comp} ({_either(list(declarations))}"
                         f" hosts {', '.join(hosted) or 'none'})")
                ok = False
        components: dict[str, Params] = {}
        for comp in hostable:
            raw = raw_comps.get(comp)
            if raw is not None and not isinstance(raw, dict):
                self.add(("model", "components", comp), f"expected a mapping, got {_short(show(raw))}")
                ok = False
                continue
            at = ("model", "components", comp)
            specs = BUILTIN_COMPONENTS[comp].params
            for key in (raw or {}):
                if key not in specs:
                    self.add((*at, key), f"unknown key; {suggest_key(key, list(specs))}")
                    ok = False
            parsed = self._section(at, {k: v for k, v in (raw or {}).items() if k in specs}, specs)
            if parsed is None:
                ok = False
            else:
                components[comp] = parsed
        return components if ok else None

    def _section(self, at: PathT, raw: dict[str, Any], specs: dict[str, ParamSpec],
                 require: bool = True) -> Params | None:
        out: Params = {}
        ok = True
        for name, spec in specs.items():
            if name not in raw:
                if spec.required and require:
                    self.add((*at, name), "missing required field")
                    ok = False
                out[name] = Fixed(spec.default)
                continue
            dist, issues = parse_param(raw[name], spec)
            for sub, message in issues:
                self.add((*at, name, *sub), message)
            if dist is None:
                ok = False
            else:
                out[name] = dist
        return out if ok else None

    def cross(self, data: dict[str, Any], plan: ModelPlan | None) -> None:
        """Checks that involve more than one key; each runs when the keys it reads are valid.
        Backbones and components bring their own (their declarations' `check`)."""
        objectives = data.get("objectives")
        if isinstance(objectives, list):
            self._objectives(objectives)
        self._budget(data.get("sampler"), objectives if isinstance(objectives, list)
                     else ["accuracy", "flops"], data.get("constraints"))
        sweep = data.get("sweep")
        if isinstance(sweep, dict) and plan is not None:
            self._sweep(sweep, plan)
        search = _valid(SearchSpec, data.get("search") or {})
        if search is not None:
            self._workers(search)
        task = _valid(TaskSpec, data.get("task"))
        if task is not None and task.val_fraction + task.test_fraction >= 1:
            self.add(("task", "test_fraction"),
                     f"val_fraction + test_fraction must be < 1 to leave training data, "
                     f"got {task.val_fraction} + {task.test_fraction}")
        if plan is None:
            return
        io = known_io(task.model_dump()) if task is not None else None
        dataset = task.dataset if task is not None else ""
        raw_model = data["model"]
        raw_comps = raw_model.get("components") or {}
        for name, decl in plan.declarations.items():
            if decl is None:
                continue
            at: PathT = ("model",) if decl.section is None else ("model", decl.section)
            raw = raw_model if decl.section is None else (raw_model.get(decl.section) or {})
            hosted = {c: plan.components[c] for c in decl.hosts if c in plan.components}

            def context(at: PathT, params: Params, raw: Any, decl: Backbone = decl,
                        name: str = name, hosted: dict[str, Params] = hosted) -> CheckContext:
                return CheckContext(at, params, raw if isinstance(raw, dict) else {},
                                    plan.keys[name], decl, hosted, io, dataset, self.add)

            if decl.check is not None:
                decl.check(context(at, plan.keys[name], raw))
            for comp, params in hosted.items():
                check = BUILTIN_COMPONENTS[comp].check
                if check is not None:
                    check(context(("model", "components", comp), params, raw_comps.get(comp)))
        constraints = _valid(ConstraintsSpec, data.get("constraints", {}))
        if io is not None and constraints is not None and constraints.max_params is not None:
            self._max_params(constraints, plan, io)

    def bounds(self, data: dict[str, Any], plan: ModelPlan | None, train: Params) -> None:
        """Refuse what the costliest candidate could not afford: a sweep or a training too long,
        or (for backbones with torch-free size formulas) more memory than the limit."""
        task = data["task"]
        check_sweep(data.get("sweep") or {}, self.add)
        check_train_length(train, task, self.add)
        search = SearchSpec.model_validate(data.get("search") or {})
        self._scheduler(search, train)
        io = known_io(task)
        if plan is None or io is None:
            return
        for name, decl in plan.declarations.items():
            if decl is None:
                continue
            hosted = {c: plan.components[c] for c in decl.hosts if c in plan.components}
            check_memory(decl, plan.keys[name], hosted, train, io, search.max_memory_gb,
                         self.add)

    def _scheduler(self, search: SearchSpec, train: Params) -> None:
        """MO-ASHA judges trials at epochs up to train.epochs: a budget in epochs, the same for
        every trial, that leaves room for its first rung and its brackets."""
        mo_asha = search.scheduler.mo_asha if search.scheduler is not None else None
        if mo_asha is None:
            return
        at = ("search", "scheduler", "mo_asha")
        steps, epochs = train.get("steps"), train.get("epochs")
        if steps is not None and not (isinstance(steps, Fixed) and steps.value is None):
            self.add(("train", "steps"), "search.scheduler.mo_asha judges trials at epochs: "
                     "give the budget as train.epochs and leave train.steps unset")
            return
        if not isinstance(epochs, Fixed):
            self.add(("train", "epochs"), "search.scheduler.mo_asha needs one train.epochs for "
                     "every trial (its last rung), not a searched value")
            return
        if mo_asha.min_epochs > epochs.value:
            self.add((*at, "min_epochs"), f"min_epochs {mo_asha.min_epochs} is above "
                     f"train.epochs {epochs.value}, the last rung")
            return
        levels = rung_levels(mo_asha.min_epochs, mo_asha.reduction_factor, epochs.value)
        if mo_asha.brackets > len(levels):
            self.add((*at, "brackets"), f"brackets {mo_asha.brackets} is more than the "
                     f"{len(levels)} rung(s) {levels} of min_epochs {mo_asha.min_epochs}, "
                     f"reduction_factor {mo_asha.reduction_factor:g} and train.epochs "
                     f"{epochs.value} allow (bracket b starts at the b-th rung)")

    def _workers(self, search: SearchSpec) -> None:
        """Data-parallel trials: each worker (a DDP rank) drives one whole device, so
        `gpus_per_trial`, each worker's share, is 0 or 1."""
        workers, gpus = search.workers_per_trial, search.gpus_per_trial
        if workers > 1 and gpus not in (0, 1):
            self.add(("search", "gpus_per_trial"),
                     f"must be 0 or 1 with search.workers_per_trial {workers}, got {gpus:g}: each "
                     "of a trial's data-parallel workers drives one whole device (gpus_per_trial "
                     "is then each worker's); raise workers_per_trial to use more GPUs")

    def _objectives(self, names: list[Any]) -> None:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if not isinstance(name, str):
                continue  # the schema reports it
            if name not in OBJECTIVES:
                self.add(("objectives", i),
                         f"unknown objective {show(name)}; {suggest_key(name, list(OBJECTIVES))}")
            elif name in seen:
                self.add(("objectives", i), f"duplicate objective {name!r}")
            seen.add(name)

    def _budget(self, sampler: Any, objectives: list[Any], constraints: Any) -> None:
        """An NNI tuner's budget names a cost the search measures: a minimized objective or a
        constrained metric."""
        budget = sampler.get("budget") if isinstance(sampler, dict) else None
        if not isinstance(budget, dict):
            return
        costs = [o for o in objectives if isinstance(o, str) and OBJECTIVES.get(o) == "minimize"]
        bounded = constraints if isinstance(constraints, dict) else {}
        costs += [m for c, m in (("max_flops", "flops"), ("max_params", "params"))
                  if bounded.get(c) is not None and m not in costs]
        for key in budget:
            if key not in costs:
                self.add(("sampler", "budget", key),
                         f"no budget for {key!r}: it is neither a minimized objective nor a "
                         f"constrained metric of this space; "
                         f"{suggest_key(key, costs, 'budgets apply to') if costs else 'this space has no cost'}")

    def _sweep(self, sweep: dict[str, Any], plan: ModelPlan) -> None:
        declarations = [d for d in plan.declarations.values() if d is not None]
        knobs = dict(SWEEP_KNOBS)
        for decl in declarations:
            knobs.update({decl.knob_key(k): spec for k, spec in decl.knobs.items()})
        foreign = any(d is None or d.origin != "builtin" for d in plan.declarations.values())
        possible_sections = {d.section or d.name for d in declarations}
        for knob, values in sweep.items():
            if knob not in knobs:
                hint = suggest_key(knob, list(knobs), "known knobs are")
                self.add(("sweep", knob), f"unknown sweep knob {knob!r}; {hint}")
                continue
            comp = knob.split(".")[0]
            if comp in _ALL_SECTIONS and comp not in possible_sections:
                self.add(("sweep", knob), f"the backbone is never {comp} in this space "
                                          f"(model.backbone), so {knob} cannot be swept")
            if comp in plan.components and True not in plan.components[comp]["enabled"].values():
                self.add(("sweep", knob), f"{comp} is never enabled in this space "
                                          f"(model.components.{comp}.enabled), so {knob} cannot be swept")
            if comp in BUILTIN_COMPONENTS and comp not in plan.components and not foreign:
                self.add(("sweep", knob), f"no backbone of this space hosts {comp}, so {knob} "
                                          "cannot be swept")
            if not isinstance(values, list):
                continue  # the schema reports it
            if not values:
                self.add(("sweep", knob), "empty sweep; list at least one value")
            for i, value in enumerate(values):
                problem = knobs[knob].check(value)
                if problem and "expected" not in problem:  # type errors come from the schema
                    self.add(("sweep", knob, i), problem)

    def _max_params(self, constraints: ConstraintsSpec, plan: ModelPlan,
                    io: dict[str, Any]) -> None:
        if len(plan.declarations) != 1:
            return
        name, decl = next(iter(plan.declarations.items()))
        if decl is None or decl.fewest_params is None:
            return
        hosted = {c: plan.components[c] for c in decl.hosts if c in plan.components}
        smallest = decl.fewest_params(plan.keys[name], hosted, io)
        limit = constraints.max_params
        if smallest is None or limit is None or smallest[0] <= limit:
            return
        count, point = smallest
        where = ", ".join(f"{k} {v}" for k, v in point.items() if k != "early_exit_heads")
        heads = point["early_exit_heads"]
        where += f", {heads} early-exit head{'s' if heads != 1 else ''}" if heads else ", early exit off"
        self.add(("constraints", "max_params"),
                 f"no architecture of this space can satisfy it: the smallest has {count:,} "
                 f"parameters ({where}), above max_params = {limit:,.0f}")


#: section name -> backbone, for the built-in backbones whose keys sit in a section
_ALL_SECTIONS = {b.section: b.name for b in BUILTIN_BACKBONES.values() if b.section}


def _close(word: str, options: list[str]) -> bool:
    """Whether `word` looks like a typo of one of `options` (one or two letters off)."""
    return bool(difflib.get_close_matches(word, options, n=1, cutoff=0.8))


def _stray_key(key: str, names: list[str]) -> str:
    """Why a key directly under `model` does not belong there in a space of `names`."""
    owners = [b.name for b in BUILTIN_BACKBONES.values() if b.section is None and key in b.params]
    if owners:
        return (f"applies to the {owners[0]} backbone only, and this space's backbone is "
                f"{_either(names)}")
    return (f"unknown key; the keys of {_either(names)} sit in their own section "
            f"(model.<backbone>)")


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)


def _valid(cls: type[BaseModel], raw: Any) -> Any:
    """`raw` validated as one section, or None (its problems are reported by the whole document)."""
    try:
        return cls.model_validate(raw)
    except ValidationError:
        return None


def _pydantic_message(err: dict[str, Any]) -> str:
    """A pydantic error in the words of a search-space file."""
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        cls: type[BaseModel] | None = model_at(loc[:-1])
        options = list(cls.model_fields) if cls is not None else []
        if loc[:-1] == ("model", "components"):
            return f"unknown component {loc[-1]!r}; {suggest_key(loc[-1], options, 'known components are')}"
        return f"unknown key; {suggest_key(loc[-1], options)}"
    if kind == "missing":
        return "missing required field"
    if kind == "literal_error" and loc == ("sampler", "name") and str(value).startswith("nni"):
        return (f"unknown sampler {show(value)}; an NNI tuner is written "
                f"sampler: {{nni: {' | '.join(NNI_TUNERS)}}}")
    if kind == "literal_error" and loc in _LITERALS:
        what, options = _LITERALS[loc]
        return f"unknown {what} {show(value)}; {suggest_key(value, options)}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {_short(show(value))}" + number_hint(value)
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {show(bound)}, got {show(value)}"
    if kind == "too_short":
        return "must list at least one item"
    if kind == "string_pattern_mismatch":
        return f"may hold only letters, digits, '_', '.' and '-', got {show(value)}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(err.get("msg", "invalid value"))


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
