"""SearchSpace: a validated search-space file, and how a trial samples an architecture from it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from condsearch.space._constraints import known_io, smallest_arch
from condsearch.space._distributions import (
    Choice,
    Distribution,
    Fixed,
    ParamSpec,
    highest,
    lowest,
    number_hint,
    parse_param,
    show,
    suggest_key,
)
from condsearch.space._errors import OVERRIDE_FILE, Problem, SpaceError, dotted
from condsearch.space._layout import EXCLUDES
from condsearch.space._lines import LineMap
from condsearch.space._overrides import Override, apply_overrides
from condsearch.space._schema import (
    BACKBONE,
    BACKBONE_PARAMS,
    BACKBONES,
    COMPONENT_PARAMS,
    MODEL_PARAMS,
    NNI_TUNERS,
    OBJECTIVES,
    SAMPLERS,
    SWEEP_KNOBS,
    TRAIN_PARAMS,
    ConstraintsSpec,
    SpaceDocument,
    TaskSpec,
    model_at,
)

PathT = tuple[str | int, ...]
Params = dict[str, Distribution]


class SearchSpace:
    """A validated search space: what to search, on which task, for which objectives, and how.

    `sample(trial)` turns an Optuna trial into an arch dict, the plain nested dict that
    `build_model` reads and export writes out.
    """

    def __init__(self, doc: SpaceDocument, backbone: Distribution, model: Params,
                 components: dict[str, Params], sections: dict[str, Params], train: Params,
                 path: str | None, source: str) -> None:
        self.name: str = doc.name
        self.path = path
        self.source = source
        self._backbone = backbone
        #: the backbones a trial can get, in the order the space lists them
        self.backbones: list[str] = list(backbone.values())
        self.task: dict[str, Any] = doc.task.model_dump()
        self.objectives: list[tuple[str, str]] = [(o, OBJECTIVES[o]) for o in doc.objectives]
        self.constraints: dict[str, float | None] = {
            k: (None if v is None else float(v)) for k, v in doc.constraints.model_dump().items()
        }
        self.sampler: dict[str, Any] = _sampler(doc)
        self.sweep: dict[str, list[float]] = {k: [float(x) for x in v] for k, v in doc.sweep.items()}
        self.trials: int = doc.search.trials
        self.seed: int = doc.search.seed
        #: how trials run on the ray backend: concurrency, cpus/gpus per trial, max_retries
        self.execution: dict[str, Any] = doc.search.model_dump(exclude={"trials", "seed"})
        self._model, self._components, self._train = model, components, train
        self._sections = sections

    def __repr__(self) -> str:
        return f"SearchSpace(name={self.name!r}, path={self.path!r})"

    def distributions(self) -> dict[str, Distribution]:
        """Every searchable key by its Optuna parameter name (`model.dim`, `train.lr`, ...)."""
        out: dict[str, Distribution] = {"model.backbone": self._backbone}
        out.update({f"model.{k}": d for k, d in self._model.items()})
        for comp, params in self._components.items():
            out.update({f"model.components.{comp}.{k}": d for k, d in params.items()})
        for name, params in self._sections.items():
            out.update({f"model.{name}.{k}": d for k, d in params.items()})
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
        backbone = pick(self._backbone, "model.backbone")
        train = {k: pick(d, f"train.{k}") for k, d in self._train.items()}
        if backbone != "token_transformer":
            section = {k: pick(d, f"model.{backbone}.{k}") for k, d in self._sections[backbone].items()}
            return {"model": {"backbone": backbone, backbone: section}, "train": train}
        model: dict[str, Any] = {"backbone": backbone}
        model.update({k: pick(d, f"model.{k}") for k, d in self._model.items()})
        components: dict[str, Any] = {}
        excluded: set[str] = set()
        for comp, params in self._components.items():
            prefix = f"model.components.{comp}"
            if comp in excluded or not pick(params["enabled"], f"{prefix}.enabled"):
                components[comp] = {"enabled": False}
                continue
            rest = {k: pick(d, f"{prefix}.{k}") for k, d in params.items() if k != "enabled"}
            components[comp] = {"enabled": True, **rest}
            excluded.update(EXCLUDES.get(comp, ()))
        model["components"] = components
        return {"model": model, "train": train}

    def to_dict(self) -> dict[str, Any]:
        """The validated document as plain data, defaults filled in; it parses back to this space."""
        model: dict[str, Any] = {"backbone": self._backbone.to_plain()}
        if "token_transformer" in self.backbones:
            model.update({k: d.to_plain() for k, d in self._model.items()})
            model["components"] = {
                comp: {k: d.to_plain() for k, d in params.items()}
                for comp, params in self._components.items()
            }
        for name, params in self._sections.items():
            model[name] = {k: d.to_plain() for k, d in params.items()}
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


def _sampler(doc: SpaceDocument) -> dict[str, Any]:
    """The sampler as plain data; an NNI tuner's name reads `nni:<tuner>` (for logs and runs)."""
    spec = doc.sampler
    if spec.nni is None:
        return {"name": spec.name, "options": copy.deepcopy(spec.options)}
    return {"name": f"nni:{spec.nni}", "nni": spec.nni, "options": copy.deepcopy(spec.options),
            "budget": dict(spec.budget), "penalty": spec.penalty}


def load_space(path: str | Path, overrides: list[str] | None = None) -> SearchSpace:
    """Read and validate a search-space YAML file; SpaceError lists every problem found."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SpaceError([Problem(str(path), 1, "(file)", f"cannot read the file: {reason}")]) from None
    return parse_space(text, str(path), overrides)


def parse_space(text: str, path: str = "<string>", overrides: list[str] | None = None) -> SearchSpace:
    """Validate search-space YAML text; `path` is only used in messages and `SearchSpace.path`."""
    try:
        lines = LineMap(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpaceError([_syntax_problem(path, err)]) from None
    check = _Checker(path, lines)
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
    backbone, model, components, sections, train = check.params(data)
    check.cross(data, backbone, model, components, sections)
    if check.problems:
        raise check.error()
    # no problems means every part validated
    assert doc is not None and backbone is not None and model is not None
    return SearchSpace(doc, backbone, model, components, sections, train,
                       None if path == "<string>" else path, text)


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


class _Checker:
    """Collects problems, each placed at the line (or `--set`) its key came from."""

    def __init__(self, path: str, lines: LineMap) -> None:
        self.path, self.lines = path, lines
        self.applied: list[Override] = []
        self.problems: list[Problem] = []

    def add(self, key: PathT, message: str) -> None:
        for override in reversed(self.applied):
            if override.owns(key):
                self.problems.append(Problem(OVERRIDE_FILE, override.number, dotted(key), message))
                return
        self.problems.append(Problem(self.path, self.lines.line(key), dotted(key), message))

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

    def params(self, data: dict[str, Any]) -> tuple[
        Distribution | None, Params | None, dict[str, Params], dict[str, Params], Params
    ]:
        """Parse every searchable key: (backbone, token-transformer keys, components, the other
        backbones' sections, train). The model's are None when any of them is invalid."""
        raw_train = data.get("train") if isinstance(data.get("train"), dict) else {}
        train = self._section(("train",), raw_train, TRAIN_PARAMS) or {}
        raw_model = data.get("model") if isinstance(data.get("model"), dict) else {}
        backbone = self._backbone(raw_model)
        if backbone is None:
            return None, None, {}, {}, train
        possible = backbone.values()
        transformer = "token_transformer" in possible
        if not transformer:
            for key in (*MODEL_PARAMS, "components"):
                if key in raw_model:
                    self.add(("model", key), f"applies to the token_transformer backbone only, "
                                             f"and this space's backbone is {_either(possible)}")
        model = self._section(("model",), raw_model, MODEL_PARAMS, require=transformer)
        components: dict[str, Params] = {}
        raw_comps = raw_model.get("components")
        raw_comps = raw_comps if isinstance(raw_comps, dict) else {}
        for comp, specs in COMPONENT_PARAMS.items():
            raw = raw_comps.get(comp)
            parsed = self._section(("model", "components", comp), raw if isinstance(raw, dict) else {}, specs)
            if parsed is None:
                model = None
            else:
                components[comp] = parsed
        sections: dict[str, Params] = {}
        for name, specs in BACKBONE_PARAMS.items():
            raw = raw_model.get(name)
            if name not in possible:
                if raw is not None:
                    self.add(("model", name), f"configures the {name} backbone, and this space's "
                                              f"backbone is {_either(possible)}")
                continue
            parsed = self._section(("model", name), raw if isinstance(raw, dict) else {}, specs)
            if parsed is None:
                model = None
            else:
                sections[name] = parsed
        return backbone, model, components, sections, train

    def _backbone(self, raw_model: dict[str, Any]) -> Distribution | None:
        if "backbone" not in raw_model:
            return None  # reported by the schema as a missing field
        dist, issues = parse_param(raw_model["backbone"], BACKBONE)
        for sub, message in issues:
            self.add(("model", "backbone", *sub), message.replace("unknown value", "unknown backbone"))
        return dist

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

    def cross(self, data: dict[str, Any], backbone: Distribution | None, model: Params | None,
              components: dict[str, Params], sections: dict[str, Params]) -> None:
        """Checks that involve more than one key; each runs when the keys it reads are valid."""
        objectives = data.get("objectives")
        if isinstance(objectives, list):
            self._objectives(objectives)
        self._budget(data.get("sampler"), objectives if isinstance(objectives, list)
                     else ["accuracy", "flops"], data.get("constraints"))
        possible = backbone.values() if backbone is not None else list(BACKBONES)
        sweep = data.get("sweep")
        if isinstance(sweep, dict):
            self._sweep(sweep, components, possible)
        raw_model = data.get("model") if isinstance(data.get("model"), dict) else {}
        raw_comps = raw_model.get("components") if isinstance(raw_model.get("components"), dict) else {}
        for comp in ("early_exit", "moe"):
            raw = raw_comps.get(comp)
            if isinstance(raw, dict) and "every" in raw and raw.get("positions") is not None:
                self.add(("model", "components", comp, "positions"),
                         "set either every or positions, not both")
        task = _valid(TaskSpec, data.get("task"))
        if task is not None and task.val_fraction + task.test_fraction >= 1:
            self.add(("task", "test_fraction"),
                     f"val_fraction + test_fraction must be < 1 to leave training data, "
                     f"got {task.val_fraction} + {task.test_fraction}")
        io = known_io(task.model_dump()) if task is not None else None
        if model is None:
            return
        self._other_backbones(sections, io, task.dataset if task is not None else "")
        if "token_transformer" not in possible:
            return
        deepest = highest(model["depth"])
        for comp, where in (("early_exit", "exit positions {} must lie before the last layer "
                                           "(1..depth-1"),
                            ("moe", "MoE positions {} must lie within the network (1..depth"),
                            ("token_selection", "selection positions {} must lie within the "
                                                "network (1..depth")):
            positions = components[comp]["positions"]
            limit = deepest - 1 if comp == "early_exit" else deepest
            if isinstance(positions, Fixed) and positions.value:
                late = [p for p in positions.value if p > limit]
                if late:
                    self.add(("model", "components", comp, "positions"),
                             where.format(late) + f", and depth is at most {deepest})")
        self._dim_heads(model, ("model", "heads"))
        self._moe(components["moe"])
        self._adatape(components, model, io)
        if io is not None and io["input_kind"] == "image":
            self._patches(("model", "patch_size"), model["patch_size"], io, task.dataset)
        constraints = _valid(ConstraintsSpec, data.get("constraints", {}))
        only_transformer = possible == ["token_transformer"]
        if (only_transformer and io is not None and constraints is not None
                and constraints.max_params is not None):
            self._max_params(constraints, model, components, io)

    def _other_backbones(self, sections: dict[str, Params], io: dict[str, Any] | None,
                         dataset: str) -> None:
        cigt, nac = sections.get("cigt"), sections.get("nac")
        if cigt is not None:
            if io is not None and io["input_kind"] != "image":
                self.add(("model", "backbone"), f"the cigt backbone is convolutional and needs "
                                                f"images, but {dataset} gives {io['input_kind']}s")
            if any(len(w) < 2 for w in cigt["widths"].values()):
                self.add(("model", "cigt", "widths"),
                         "a trellis needs at least 2 layers (the last one holds the leaves)")
        if nac is not None:
            self._dim_heads(nac, ("model", "nac", "heads"))
            if io is not None and io["input_kind"] == "image":
                self._patches(("model", "nac", "patch_size"), nac["patch_size"], io, dataset)

    def _moe(self, moe: Params) -> None:
        if True not in moe["enabled"].values():
            return
        experts, top_k = moe["experts"], moe["top_k"]
        if highest(top_k) > lowest(experts):
            self.add(("model", "components", "moe", "top_k"),
                     f"top_k can reach {highest(top_k)} but experts can be as few as "
                     f"{lowest(experts)}; top_k must never exceed experts")

    def _adatape(self, components: dict[str, Params], model: Params,
                 io: dict[str, Any] | None) -> None:
        tape = components["adatape"]
        if True not in tape["enabled"].values():
            return
        at = ("model", "components", "adatape")
        if highest(tape["insert_after"]) > lowest(model["depth"]) - 1:
            self.add((*at, "insert_after"),
                     f"insert_after can reach {highest(tape['insert_after'])} but depth can be "
                     f"{lowest(model['depth'])}; at least one layer must follow the tape")
        if tape["enabled"] == Fixed(True):
            for other in EXCLUDES["adatape"]:
                if components[other]["enabled"] == Fixed(True):
                    self.add(("model", "components", other, "enabled"),
                             f"{other} cannot be on while adatape is on; with adatape enabled "
                             f"it is switched off (give it a choice or set it false)")
        reads = highest(tape["max_tape"]) * highest(tape["tokens_per_step"])
        banks = tape["bank"].values()
        if "learned" in banks and lowest(tape["bank_size"]) < reads:
            self.add((*at, "bank_size"),
                     f"a learned bank needs at least max_tape x tokens_per_step = {reads} rows, "
                     f"but bank_size can be {lowest(tape['bank_size'])}")
        if "input" in banks and io is not None:
            if io["input_kind"] == "image":
                _, h, w = io["input_shape"]
                rows = min((h // p) * (w // p) for p in model["patch_size"].values() or [1])
            else:
                rows = int(io["input_shape"][0])
            if rows < reads:
                self.add((*at, "bank"),
                         f"an input bank has one row per patch or position ({rows} here), fewer "
                         f"than max_tape x tokens_per_step = {reads}")

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

    def _sweep(self, sweep: dict[str, Any], components: dict[str, Params], possible: list[str]) -> None:
        for knob, values in sweep.items():
            if knob not in SWEEP_KNOBS:
                hint = suggest_key(knob, list(SWEEP_KNOBS), "known knobs are")
                self.add(("sweep", knob), f"unknown sweep knob {knob!r}; {hint}")
                continue
            comp = knob.split(".")[0]
            if comp in BACKBONE_PARAMS and comp not in possible:
                self.add(("sweep", knob), f"the backbone is never {comp} in this space "
                                          f"(model.backbone), so {knob} cannot be swept")
            if comp in components and True not in components[comp]["enabled"].values():
                self.add(("sweep", knob), f"{comp} is never enabled in this space "
                                          f"(model.components.{comp}.enabled), so {knob} cannot be swept")
            if not isinstance(values, list):
                continue  # the schema reports it
            if not values:
                self.add(("sweep", knob), "empty sweep; list at least one value")
            for i, value in enumerate(values):
                problem = SWEEP_KNOBS[knob].check(value)
                if problem and "expected" not in problem:  # type errors come from the schema
                    self.add(("sweep", knob, i), problem)

    def _dim_heads(self, model: Params, at: PathT) -> None:
        dim, heads = model["dim"], model["heads"]
        if isinstance(dim, Fixed) and isinstance(heads, Fixed):
            if dim.value % heads.value:
                self.add(at, f"dim ({dim.value}) is not divisible by heads ({heads.value})")
            return
        dims, head_counts = dim.values(), heads.values()
        if dims is not None and head_counts is not None and not any(
            d % h == 0 for d in dims for h in head_counts
        ):
            self.add(at, "no value of dim is divisible by any value of heads")

    def _patches(self, at: PathT, patch: Distribution, io: dict[str, Any], dataset: str) -> None:
        _, h, w = io["input_shape"]
        size = f"the {h}x{w} images of {dataset}"
        if isinstance(patch, Fixed):
            if h % patch.value or w % patch.value:
                self.add(at, f"patch_size {patch.value} does not divide {size}")
        elif isinstance(patch, Choice):
            for i, p in enumerate(patch.items):
                if h % p or w % p:
                    self.add((*at, "choice", i), f"patch_size {p} does not divide {size}")
        elif not any(h % p == 0 and w % p == 0 for p in patch.values() or []):
            self.add(at, f"no patch_size in this range divides {size}")

    def _max_params(self, constraints: ConstraintsSpec, model: Params,
                    components: dict[str, Params], io: dict[str, Any]) -> None:
        smallest = smallest_arch(model, components, io)
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
