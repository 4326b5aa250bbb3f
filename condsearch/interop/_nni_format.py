"""NNI's `search_space.json` format, both ways, for a condsearch search space.

Each searched key is an NNI parameter named by its condsearch parameter name (`model.dim`,
`train.lr`, `model.components.moe.experts`). A choice that switches parameters on is a nested
choice: `model.backbone` has one option per backbone holding that backbone's keys, and
`model.components.<c>.enabled` has a `true` option holding the component's keys and a `false`
option holding none. NNI 3.0's TPE and random tuners fail on a nested choice inside a nested
option, so components stay at the top level even when the backbone is a choice (their keys are
used only when the token transformer is picked). A fixed value that differs from its default
travels as a choice of that one value, so nothing the space sets is lost.

No torch and no NNI are imported here: the format is plain JSON.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from condsearch._names import OBJECTIVES
from condsearch.space._declaration import Backbone
from condsearch.space._distributions import (
    Choice,
    Distribution,
    Fixed,
    FloatRange,
    IntRange,
    ParamSpec,
    highest,
    show,
    suggest_key,
)
from condsearch.space._registry import BackboneUnavailable, find_backbone, known_names
from condsearch.space._schema import TRAIN_PARAMS
from condsearch.space.declared import BUILTIN_BACKBONES, BUILTIN_COMPONENTS


def _convertible() -> dict[str, Backbone]:
    """The backbones NNI's format carries: the built-ins and every installed one whose keys are
    all declared (`strict`, as conv_net); an import path or an undeclared key has no fixed table
    to convert back from."""
    out = dict(BUILTIN_BACKBONES)
    for name in known_names():
        if name in out:
            continue
        try:
            decl = find_backbone(name)
        except BackboneUnavailable:
            continue
        if decl.strict:
            out[name] = decl
    return out


# The key table, from the declarations.
CONVERTIBLE = _convertible()
BACKBONE = ParamSpec("enum", "token_transformer", values=tuple(CONVERTIBLE))
#: a key directly under `model` -> the backbone that declares it
FLAT_KEYS = {k: b.name for b in reversed(CONVERTIBLE.values()) if b.section is None
             for k in b.params}
BACKBONE_PARAMS = {b.section: b.params for b in CONVERTIBLE.values() if b.section}
COMPONENT_PARAMS = {c.name: c.params for c in BUILTIN_COMPONENTS.values()}
EXCLUDES = {c.name: c.excludes for c in BUILTIN_COMPONENTS.values() if c.excludes}

#: NNI's distribution types that a condsearch key can take
NNI_TYPES = ("choice", "randint", "uniform", "quniform", "loguniform", "qloguniform")
_NORMAL_TYPES = ("normal", "qnormal", "lognormal", "qlognormal")
#: what `convert --from nni` fills in when neither the command nor a `--like` space says
DEFAULT_DATASET = "digits"
DEFAULT_OBJECTIVES = ("accuracy", "flops")
#: the parts of a search space that NNI's format has no place for (taken from `--like`)
OUTSIDE_NNI = ("name", "task", "objectives", "constraints", "sampler", "sweep", "search")


class ConvertError(ValueError):
    """A search space (or an NNI file) that the other format cannot express; one problem a line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _key_specs() -> dict[str, ParamSpec]:
    """Every condsearch parameter name -> the spec of the key it sets."""
    specs: dict[str, ParamSpec] = {"model.backbone": BACKBONE}
    for decl in CONVERTIBLE.values():
        if decl.section is None:
            specs.update({decl.param_name(k): s for k, s in decl.params.items()})
    for comp, params in COMPONENT_PARAMS.items():
        specs.update({f"model.components.{comp}.{k}": s for k, s in params.items()})
    for name, params in BACKBONE_PARAMS.items():
        specs.update({f"model.{name}.{k}": s for k, s in params.items()})
    specs.update({f"train.{k}": s for k, s in TRAIN_PARAMS.items()})
    return specs


KEY_SPECS = _key_specs()


def _backbone_of(key: str) -> str | None:
    """The backbone a parameter belongs to; None for the backbone choice and train keys."""
    parts = key.split(".")
    if parts[0] != "model" or key == "model.backbone":
        return None
    if parts[1] == "components":
        return None
    return parts[1] if parts[1] in BACKBONE_PARAMS else FLAT_KEYS.get(parts[1])


def _component_of(key: str) -> str | None:
    parts = key.split(".")
    return parts[2] if parts[:2] == ["model", "components"] else None


# ---- condsearch -> NNI ------------------------------------------------------------------------


def space_to_nni(space: Any, include_fixed: bool = True) -> tuple[dict[str, Any], list[str]]:
    """The space as NNI's search-space dict, and notes on keys left out because no trial can
    ever use them. `include_fixed=False` leaves out fixed values (what a tuner needs)."""
    foreign = [b for b in space.backbones if b not in CONVERTIBLE]
    if foreign:
        raise ConvertError([f"model.backbone: {foreign[0]} does not declare all its keys; NNI's "
                            f"format carries backbones that do ({', '.join(CONVERTIBLE)})"])
    dists = space.distributions()
    problems: list[str] = []
    notes: list[str] = []

    def entry(name: str) -> dict[str, Any] | None:
        try:
            return _to_nni(name, dists[name], include_fixed)
        except ConvertError as exc:
            problems.extend(exc.problems)
            return None

    def entries(names: list[str]) -> dict[str, Any]:
        return {n: e for n in names if (e := entry(n)) is not None}

    backbone = dists["model.backbone"]
    possible = backbone.values()
    out: dict[str, Any] = {}
    per_backbone = {name: [decl.param_name(k) for k in decl.params]
                    for name, decl in CONVERTIBLE.items()}
    if isinstance(backbone, Fixed) and CONVERTIBLE[backbone.value].section is None:
        out.update(entries(per_backbone[backbone.value]))
    else:
        out["model.backbone"] = {"_type": "choice", "_value": [
            {"_name": b, **entries(per_backbone[b])} for b in possible]}
    if any(CONVERTIBLE[b].hosts for b in possible):
        out.update(_components(dists, entries, notes))
    out.update(entries([f"train.{k}" for k in TRAIN_PARAMS]))
    if problems:
        raise ConvertError(problems)
    return out, notes


def _components(dists: dict[str, Distribution], entries: Any, notes: list[str]) -> dict[str, Any]:
    """Each component that can be on, as a nested choice on its `enabled` key."""
    out: dict[str, Any] = {}
    present = {c: params for c, params in COMPONENT_PARAMS.items()
               if f"model.components.{c}.enabled" in dists}
    always_on = {c for c in present
                 if False not in dists[f"model.components.{c}.enabled"].values()}
    shut = {other for comp in always_on for other in EXCLUDES.get(comp, ())}
    for comp, params in present.items():
        prefix = f"model.components.{comp}"
        enabled = dists[f"{prefix}.enabled"]
        rest = [f"{prefix}.{k}" for k in params if k != "enabled"]
        if True not in enabled.values() or comp in shut:
            dead = [n for n in rest if _differs(n, dists[n])]
            if dead:
                why = (f"{comp} is never enabled" if comp not in shut else
                       f"{comp} is always switched off by {', '.join(sorted(always_on))}")
                notes.append(f"{', '.join(dead)}: left out, no trial uses them ({why})")
            continue
        inner = entries(rest)
        out[f"{prefix}.enabled"] = {"_type": "choice", "_value": [
            ({"_name": True, **copy.deepcopy(inner)} if on else {"_name": False})
            for on in enabled.values()]}
    return out


def _differs(name: str, dist: Distribution) -> bool:
    """Whether a key holds anything but its default (a distribution, or another fixed value)."""
    spec = KEY_SPECS[name]
    return not (isinstance(dist, Fixed) and _same(dist.value, spec.default))


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _to_nni(name: str, dist: Distribution, include_fixed: bool) -> dict[str, Any] | None:
    """One key's NNI entry, or None for a fixed value the tuner need not see."""
    spec = KEY_SPECS[name]
    if isinstance(dist, Fixed):
        if not include_fixed or not _differs(name, dist):
            return None
        return {"_type": "choice", "_value": [_encode(name, spec, dist.value)]}
    if isinstance(dist, Choice):
        return {"_type": "choice", "_value": [_encode(name, spec, v) for v in dist.items]}
    if isinstance(dist, IntRange):
        if dist.log:
            return {"_type": "qloguniform", "_value": [dist.lo, dist.hi, 1]}
        if dist.step == 1:
            return {"_type": "randint", "_value": [dist.lo, dist.hi + 1]}  # NNI's upper is open
        if dist.lo % dist.step:
            raise ConvertError([f"{name}: int range [{dist.lo}, {dist.hi}] with step {dist.step} "
                                "cannot be expressed in NNI's format: its quniform rounds to "
                                "multiples of q counted from 0, so lo must be a multiple of step"])
        return {"_type": "quniform", "_value": [dist.lo, highest(dist), dist.step]}
    assert isinstance(dist, FloatRange)
    if dist.lo == dist.hi:
        raise ConvertError([f"{name}: float range [{show(dist.lo)}, {show(dist.hi)}] cannot be "
                            "expressed in NNI's format, which needs high > low; write the fixed "
                            "value instead"])
    if dist.log:
        return {"_type": "loguniform", "_value": [dist.lo, dist.hi]}
    if dist.step is None:
        return {"_type": "uniform", "_value": [dist.lo, dist.hi]}
    if not _multiple(dist.lo, dist.step):
        raise ConvertError([f"{name}: float range [{show(dist.lo)}, {show(dist.hi)}] with step "
                            f"{show(dist.step)} cannot be expressed in NNI's format: its quniform "
                            "rounds to multiples of q counted from 0, so lo must be a multiple "
                            "of step"])
    top = dist.lo + math.floor((dist.hi - dist.lo) / dist.step + 1e-9) * dist.step
    return {"_type": "quniform", "_value": [dist.lo, round(top, 12), dist.step]}


def _multiple(x: float, step: float) -> bool:
    ratio = x / step
    return abs(ratio - round(ratio)) < 1e-9


def _encode(name: str, spec: ParamSpec, value: Any) -> Any:
    """A value as an NNI choice item: NNI's choices hold numbers and strings only, so a list
    (and the null of a list key) travels as its JSON text."""
    if spec.kind == "int_list":
        return json.dumps(value)
    if value is None:
        raise ConvertError([f"{name}: a choice holding null cannot be expressed in NNI's format, "
                            "whose choices hold numbers and strings only"])
    return value


# ---- NNI -> condsearch ------------------------------------------------------------------------


def nni_to_document(nni: Any, *, name: str | None = None, dataset: str | None = None,
                    objectives: list[str] | None = None, backbone: str | None = None,
                    like: Any = None) -> tuple[dict[str, Any], list[str]]:
    """A condsearch search-space document (plain data) from an NNI search-space dict, and notes
    on what was filled in. What NNI's format lacks comes from the arguments, else from the space
    `like` (task, objectives, constraints, sampler, sweep, search), else from defaults."""
    reader = _NniReader()
    reader.walk(nni, ())
    if reader.problems:
        raise ConvertError(reader.problems)
    values = reader.values
    notes: list[str] = []
    present = {b for k in values if (b := _backbone_of(k)) is not None}
    if "model.backbone" in values:
        if backbone is not None and _plain_values(values["model.backbone"]) != [backbone]:
            raise ConvertError([f"model.backbone: the file chooses among "
                                f"{_plain_values(values['model.backbone'])}, not {backbone!r} "
                                "as --backbone says"])
    else:
        if len(present) > 1:
            raise ConvertError([f"the file sets keys of the backbones {', '.join(sorted(present))} "
                                "but has no model.backbone choice among them"])
        chosen = backbone or (next(iter(present)) if present else None)
        if chosen is None:
            chosen = "token_transformer"
            notes.append("model.backbone: not in the file; token_transformer (the default)")
        values["model.backbone"] = chosen
    picked = _plain_values(values["model.backbone"])
    for key in values:
        owner = _backbone_of(key)
        if owner is not None and owner not in picked:
            reader.problems.append(f"{key}: belongs to the {owner} backbone, which "
                                   f"model.backbone never picks ({', '.join(picked)})")
    if reader.problems:
        raise ConvertError(reader.problems)

    model: dict[str, Any] = {"backbone": values.pop("model.backbone")}
    train: dict[str, Any] = {}
    for key, value in values.items():
        parts = key.split(".")
        if parts[0] == "train":
            train[parts[1]] = value
        elif parts[1] == "components":
            model.setdefault("components", {}).setdefault(parts[2], {})[parts[3]] = value
        elif parts[1] in BACKBONE_PARAMS:
            model.setdefault(parts[1], {})[parts[2]] = value
        else:
            model[parts[1]] = value
    for comp, settings in (model.get("components") or {}).items():
        if "enabled" not in settings:
            settings["enabled"] = True
            notes.append(f"model.components.{comp}.enabled: not in the file, but its keys are; "
                         "true")
    model["components"] = {c: model["components"][c] for c in COMPONENT_PARAMS
                           if c in model.get("components", {})}
    if not model["components"]:
        del model["components"]

    base = _without_defaults(like.to_dict()) if like is not None else {}
    doc: dict[str, Any] = {"name": name or base.get("name") or "from_nni"}
    if dataset is not None:
        doc["task"] = {"dataset": dataset}
    elif "task" in base:
        doc["task"] = base["task"]
    else:
        doc["task"] = {"dataset": DEFAULT_DATASET}
        notes.append(f"task: not in NNI's format; dataset {DEFAULT_DATASET} (pass --task)")
    doc["model"] = model
    if objectives is not None:
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown:
            raise ConvertError([f"objectives: unknown objective {unknown[0]!r}; "
                                f"{suggest_key(unknown[0], list(OBJECTIVES))}"])
        doc["objectives"] = list(objectives)
    elif "objectives" in base:
        doc["objectives"] = base["objectives"]
    else:
        doc["objectives"] = list(DEFAULT_OBJECTIVES)
        notes.append(f"objectives: not in NNI's format; {', '.join(DEFAULT_OBJECTIVES)}")
    for part in ("constraints", "sampler", "sweep", "search"):
        if part in base:
            doc[part] = base[part]
    if train:
        doc["train"] = train
    return _ordered(doc), notes


def _without_defaults(doc: dict[str, Any]) -> dict[str, Any]:
    """A space's sections outside NNI's format, less the values every space has by default."""
    from condsearch.space._schema import ConstraintsSpec, SearchSpec, TaskSpec

    out = dict(doc)
    for part, cls in (("task", TaskSpec), ("constraints", ConstraintsSpec), ("search", SearchSpec)):
        defaults = {k: f.get_default(call_default_factory=True) for k, f in cls.model_fields.items()}
        kept = {k: v for k, v in out[part].items() if k not in defaults or v != defaults[k]}
        if kept or part == "task":
            out[part] = kept
        else:
            del out[part]
    if out["sampler"] == {"name": "tpe", "options": {}}:
        del out["sampler"]
    if not out["sweep"]:
        del out["sweep"]
    return out


def _plain_values(value: Any) -> list[Any]:
    return list(value["choice"]) if isinstance(value, dict) and "choice" in value else [value]


def _ordered(doc: dict[str, Any]) -> dict[str, Any]:
    order = ("name", "task", "model", "objectives", "constraints", "train", "sampler", "sweep",
             "search")
    return {k: doc[k] for k in order if k in doc}


class _NniReader:
    """Walks an NNI search space, turning each entry into the YAML form of a condsearch key."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.problems: list[str] = []

    def walk(self, space: Any, inside: tuple[str, Any] | tuple[()]) -> None:
        where = f" (in the option {show(inside[1])} of {inside[0]})" if inside else ""
        if not isinstance(space, dict):
            self.problems.append(f"(file): expected a JSON object of parameters, got "
                                 f"{type(space).__name__}")
            return
        for key, entry in space.items():
            if key == "_name":
                continue
            if key not in KEY_SPECS:
                self.problems.append(f"{key}{where}: not a condsearch key; NNI parameters must be "
                                     f"named by condsearch keys, {suggest_key(key, list(KEY_SPECS))}")
                continue
            if key in self.values:
                self.problems.append(f"{key}{where}: appears twice")
                continue
            if inside and not _belongs(key, inside):
                self.problems.append(f"{key}{where}: does not belong there; condsearch samples "
                                     "it whatever that choice is (put it at the top level)")
                continue
            if not isinstance(entry, dict) or "_type" not in entry or "_value" not in entry:
                self.problems.append(f"{key}: expected {{\"_type\": ..., \"_value\": [...]}}, "
                                     f"got {json.dumps(entry)[:60]}")
                continue
            self._entry(key, entry["_type"], entry["_value"])

    def _entry(self, key: str, kind: Any, args: Any) -> None:
        spec = KEY_SPECS[key]
        if kind in _NORMAL_TYPES:
            self.problems.append(f"{key}: {kind} cannot be expressed in condsearch, which has "
                                 "no normal distributions (use uniform, loguniform or choice)")
            return
        if kind not in NNI_TYPES:
            self.problems.append(f"{key}: unknown NNI type {show(kind)}; "
                                 f"{suggest_key(kind, NNI_TYPES)}")
            return
        if not isinstance(args, list) or not args:
            self.problems.append(f"{key}: _value must be a non-empty list, got {show(args)}")
            return
        if kind == "choice":
            self._choice(key, spec, args)
            return
        self._range(key, spec, kind, args)

    def _choice(self, key: str, spec: ParamSpec, args: list[Any]) -> None:
        nested = [isinstance(a, dict) for a in args]
        if any(nested):
            if not all(nested) or not all("_name" in a for a in args):
                self.problems.append(f"{key}: a nested choice needs every option to be an "
                                     "object with a _name")
                return
            if key != "model.backbone" and not key.endswith(".enabled"):
                self.problems.append(f"{key}: only model.backbone and a component's enabled "
                                     "key switch other keys on; this one cannot be a nested "
                                     "choice")
                return
            items = [a["_name"] for a in args]
        else:
            items = list(args)
        decoded = []
        for item in items:
            value = _decode(spec, item)
            problem = spec.check(value)
            if problem:
                self.problems.append(f"{key}: choice {show(item)}: {problem}")
                return
            decoded.append(spec.normalize(value))
        self.values[key] = decoded[0] if len(decoded) == 1 else {"choice": decoded}
        if any(nested):
            for option, name in zip(args, items):
                self.walk(option, (key, name))

    def _range(self, key: str, spec: ParamSpec, kind: str, args: list[Any]) -> None:
        size = 3 if kind.startswith("q") else 2
        if len(args) != size or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                         for a in args):
            self.problems.append(f"{key}: {kind} takes {size} numbers, got {show(args)}")
            return
        lo, hi = args[0], args[1]
        if spec.kind not in ("int", "float"):
            self.problems.append(f"{key}: {kind} cannot set this key (it takes "
                                 f"{spec._expected()}); use a choice")
            return
        integer = spec.kind == "int"
        if kind == "randint":
            if not integer or not all(isinstance(a, int) for a in args):
                self.problems.append(f"{key}: randint gives integers; this key takes "
                                     f"{spec._expected()} (use uniform)")
                return
            if hi - 1 < lo:
                self.problems.append(f"{key}: randint [{lo}, {hi}) holds no integer")
                return
            self.values[key] = {"int": [lo, hi - 1]}
        elif kind in ("uniform", "loguniform"):
            if integer:
                hint = "randint" if kind == "uniform" else "qloguniform with q = 1"
                self.problems.append(f"{key}: {kind} gives reals, and this key takes an integer "
                                     f"(use {hint})")
                return
            self.values[key] = {"float": [float(lo), float(hi)], **(
                {"log": True} if kind == "loguniform" else {})}
        elif kind == "quniform":
            q = args[2]
            if q <= 0 or not _multiple(lo, q):
                self.problems.append(f"{key}: quniform [{show(lo)}, {show(hi)}, {show(q)}] rounds "
                                     "to multiples of q counted from 0, and condsearch's steps "
                                     "count from lo: lo must be a multiple of q > 0")
                return
            if integer:
                if not all(float(a).is_integer() for a in args):
                    self.problems.append(f"{key}: this key takes integers, so quniform needs "
                                         f"integer low, high and q, got {show(args)}")
                    return
                self.values[key] = {"int": [int(lo), int(hi)], "step": int(q)}
            else:
                self.values[key] = {"float": [float(lo), float(hi)], "step": float(q)}
        else:  # qloguniform
            if not integer or args[2] != 1:
                self.problems.append(f"{key}: qloguniform is expressible only as a log-uniform "
                                     "integer range (an integer key and q = 1); condsearch does "
                                     "not combine log with a step")
                return
            if not all(float(a).is_integer() for a in args[:2]):
                self.problems.append(f"{key}: this key takes integers, got {show(args)}")
                return
            self.values[key] = {"int": [int(lo), int(hi)], "log": True}


def _belongs(key: str, inside: tuple[str, Any]) -> bool:
    """Whether `key` may sit in the option `value` of the nested choice `owner`."""
    owner, value = inside
    if owner == "model.backbone":
        return _backbone_of(key) == value
    comp = owner.split(".")[2]
    if value is True:
        return _component_of(key) == comp
    return _component_of(key) in EXCLUDES.get(comp, ())


def _decode(spec: ParamSpec, item: Any) -> Any:
    """An NNI choice item as a condsearch value: list keys travel as JSON text."""
    if spec.kind == "int_list" and isinstance(item, str):
        try:
            return json.loads(item)
        except json.JSONDecodeError:
            return item
    return item


def document_to_yaml(doc: dict[str, Any], header: str = "") -> str:
    """A search-space document as YAML text: distributions in flow style, one key a line."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def mapping(dumper: Any, data: dict[str, Any]) -> Any:
        flow = any(k in data for k in ("int", "float", "choice")) or all(
            not isinstance(v, (dict, list)) for v in data.values()) and len(data) <= 6
        return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)

    def sequence(dumper: Any, data: list[Any]) -> Any:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    _Dumper.add_representer(dict, mapping)
    _Dumper.add_representer(list, sequence)
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return header + text
