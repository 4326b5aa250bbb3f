"""Declarations: what a backbone or an adaptive component offers a search space, stated once.

A declaration holds a thing's keys (type, range, default, help), its inference knobs, what it
excludes, its cross-key checks and where its builder lives. The schema, validation, the sweep
knobs, the NNI key table, the parameter formula and the docs' reference table all read these;
builders read only values the declarations completed. Nothing here imports torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from condsearch.space._distributions import Distribution, ParamSpec

Path = tuple[str | int, ...]
Params = dict[str, Distribution]


@dataclass
class CheckContext:
    """What a cross-key check sees: the parsed keys of the thing it checks and of its host."""

    #: where the checked keys sit: ("model",), ("model", "cigt") or ("model", "components", "moe")
    at: Path
    #: the checked thing's keys, each a distribution (Fixed for a value that is not searched)
    params: Params
    #: the keys as written in the file (to tell a key given from a default)
    raw: dict[str, Any]
    #: the hosting backbone's keys (for a component; the backbone's own for a backbone)
    host: Params
    #: the hosting backbone's declaration
    host_declaration: Backbone
    #: every component's parsed keys that the host can hold
    components: dict[str, Params]
    #: the task's input description when known before loading it (None for npz and factories)
    io: dict[str, Any] | None
    dataset: str
    report: Callable[[Path, str], None]

    def add(self, key: str | Path, message: str) -> None:
        """Report a problem at a key of the checked thing (a name, or a path below it)."""
        self.report((*self.at, *((key,) if isinstance(key, str) else key)), message)

    def add_at(self, path: Path, message: str) -> None:
        """Report a problem at an absolute key path of the document."""
        self.report(path, message)


Check = Callable[[CheckContext], None]


@dataclass(frozen=True)
class Component:
    """An adaptive component a backbone may host under `model.components.<name>`.

    `params` holds `enabled` and the component's keys; `knobs` names the keys that are also
    inference knobs (swept as `<name>.<knob>`), each mapped to the range a swept value must lie
    in; `excludes` lists components switched off while this one is on.
    """

    name: str
    params: dict[str, ParamSpec]
    knobs: dict[str, ParamSpec] = field(default_factory=dict)
    excludes: tuple[str, ...] = ()
    check: Check | None = None
    #: the block that implements it, as `module:attribute` (documentation and docs tables)
    block: str = ""
    doc: str = ""


@dataclass(frozen=True)
class Backbone:
    """A network family a space may name in `model.backbone`.

    `factory` is `module:function` (imported when first built) or a callable; it receives the
    sampled model section (a plain dict: `backbone`, the keys, `components`) and the task's io
    description, and returns an `nn.Module`. Keys sit directly under `model` when `section` is
    None, else under `model.<section>`. `hosts` names the components it can hold. `strict`
    makes an undeclared key an error; otherwise undeclared keys are sampled and passed as
    written, and only one close to a declared key is taken for a typo.
    """

    name: str
    factory: str | Callable[..., Any]
    params: dict[str, ParamSpec] = field(default_factory=dict)
    section: str | None = None
    hosts: tuple[str, ...] = ()
    knobs: dict[str, ParamSpec] = field(default_factory=dict)
    check: Check | None = None
    #: (lowest, highest) count of the layers that component positions index, from the keys
    depth: Callable[[Params], tuple[int, int]] | None = None
    #: trainable parameters of a completed model section on a task's io (torch-free formula)
    param_count: Callable[[dict[str, Any], dict[str, Any]], int] | None = None
    #: values one sample's forward pass keeps for the backward pass, about (torch-free formula);
    #: with `param_count` it lets validation bound the memory of the costliest candidate
    activations: Callable[[dict[str, Any], dict[str, Any]], int] | None = None
    #: the fewest parameters any point of the space can have, and that point; None if unknown
    fewest_params: Callable[[Params, dict[str, Params], dict[str, Any]],
                            tuple[int, dict[str, Any]] | None] | None = None
    strict: bool = False
    #: where it came from: "builtin", "registered", "entry point" or "import path"
    origin: str = "registered"
    doc: str = ""

    @property
    def factory_path(self) -> str | None:
        """`module:function` of the factory, as export records it (None for a lambda)."""
        if isinstance(self.factory, str):
            return self.factory
        module, name = getattr(self.factory, "__module__", None), getattr(
            self.factory, "__qualname__", "")
        if not module or "<" in name:
            return None
        return f"{module}:{name}"

    def knob_key(self, knob: str) -> str:
        """The sweep key of one of its own knobs."""
        return f"{self.section or self.name}.{knob}"

    def param_name(self, key: str) -> str:
        """The Optuna parameter name under which a space samples one of its keys."""
        return f"model.{key}" if self.section is None else f"model.{self.section}.{key}"


def complete(specs: Mapping[str, ParamSpec], values: Mapping[str, Any] | None) -> dict[str, Any]:
    """`values` with every declared key that is missing set to its default (copied)."""
    out = {k: copy.deepcopy(spec.default) for k, spec in specs.items()}
    out.update(copy.deepcopy(dict(values or {})))
    return out
