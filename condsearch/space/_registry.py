"""Where a backbone name leads: built-ins, `register_backbone`, entry points, import paths.

`model.backbone` may name a built-in backbone, one registered in this process with
`register_backbone`, one an installed package declares in the `condsearch.backbones` entry-point
group, or a factory by its import path `package.module:function`. An import path is code: it
is imported only when the caller trusts it (`condsearch search` does; `validate` does with
`--trust-code`), from `sys.path` or from the search-space file's own folder.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from condsearch.space._declaration import Backbone, Check, Params
from condsearch.space._distributions import ParamSpec
from condsearch.space.declared import BUILTIN_BACKBONES, BUILTIN_COMPONENTS

ENTRY_POINT_GROUP = "condsearch.backbones"
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
#: attribute a factory carries when `declare` has stated its parameters
DECLARATION_ATTR = "__condsearch_backbone__"

_registered: dict[str, Backbone] = {}
_entry_points: dict[str, metadata.EntryPoint] | None = None


class BackboneUnavailable(LookupError):
    """A backbone name that leads nowhere here, or a factory that cannot be imported."""


def _check_hosts(hosts: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [h for h in hosts if h not in BUILTIN_COMPONENTS]
    if unknown:
        raise ValueError(f"unknown components {unknown}; a backbone can host "
                         f"{', '.join(BUILTIN_COMPONENTS)}")
    return tuple(hosts)


def _check_params(params: Mapping[str, ParamSpec] | None) -> dict[str, ParamSpec]:
    params = dict(params or {})
    for key, spec in params.items():
        if not isinstance(spec, ParamSpec):
            raise TypeError(f"parameter {key!r}: expected condsearch.Param, got "
                            f"{type(spec).__name__}")
        if key in ("backbone", "components"):
            raise ValueError(f"{key!r} is a reserved key of the model section")
    return params


def declare_backbone(*, params: Mapping[str, ParamSpec] | None = None, hosts: tuple[str, ...] = (),
                     section: str | None = None, knobs: Mapping[str, ParamSpec] | None = None,
                     strict: bool = False, check: Check | None = None,
                     depth: Callable[[Params], tuple[int, int]] | None = None,
                     doc: str = "") -> Callable[[Callable], Callable]:
    """Decorator stating a factory's parameters and the components it hosts, so a space that
    names it by import path (`model.backbone: "pkg.mod:build"`) is validated against them."""

    def mark(factory: Callable) -> Callable:
        setattr(factory, DECLARATION_ATTR, Backbone(
            name="", factory=factory, params=_check_params(params), section=section,
            hosts=_check_hosts(hosts), knobs=dict(knobs or {}), strict=strict, check=check,
            depth=depth, doc=doc or (factory.__doc__ or "").strip().split("\n")[0]))
        return factory

    return mark


def register_backbone(name: str, factory: str | Callable[..., Any], *,
                      params: Mapping[str, ParamSpec] | None = None, hosts: tuple[str, ...] = (),
                      section: str | None = None, knobs: Mapping[str, ParamSpec] | None = None,
                      strict: bool = False, check: Check | None = None,
                      depth: Callable[[Params], tuple[int, int]] | None = None,
                      doc: str = "") -> Backbone:
    """Make `model.backbone: <name>` build with `factory(model_section, io) -> nn.Module`.

    `factory` is a callable or its import path `module:function` (imported when first built).
    `params` declares keys (`condsearch.Param`: type, range, default, help), validated like the
    built-ins' with `file:line` messages; `hosts` names the built-in components its model may
    hold under `model.components`; a factory decorated with `declare_backbone` brings that
    declaration, which these arguments override. `check(ctx)` adds cross-key checks (`condsearch.space.
    CheckContext`); `depth(keys)` gives the (lowest, highest) count of layers that hosted
    components' positions index. Registering a name again replaces it; built-in names are
    refused.
    """
    if not re.match(r"^[A-Za-z_][\w.-]*$", name) or ":" in name:
        raise ValueError(f"backbone name {name!r}: use letters, digits, '_', '.' and '-'")
    if name in BUILTIN_BACKBONES:
        raise ValueError(f"{name!r} is a built-in backbone; choose another name")
    if isinstance(factory, str) and not IMPORT_PATH.match(factory):
        raise ValueError(f"factory {factory!r}: expected 'package.module:function'")
    stated = getattr(factory, DECLARATION_ATTR, None)
    if isinstance(stated, Backbone):  # what `declare_backbone` stated, unless given again here
        params = stated.params if params is None else params
        hosts, section = hosts or stated.hosts, section or stated.section
        knobs, strict = stated.knobs if knobs is None else knobs, strict or stated.strict
        check, depth = check or stated.check, depth or stated.depth
        doc = doc or stated.doc
    declared = _check_params(params)
    decl = Backbone(name=name, factory=factory, params=declared, section=section,
                    hosts=_check_hosts(hosts), knobs=dict(knobs or {}), strict=strict,
                    check=check, depth=depth, origin="registered", doc=doc)
    _registered[name] = decl
    return decl


def unregister_backbone(name: str) -> None:
    """Forget a backbone registered in this process (no-op when it is not)."""
    _registered.pop(name, None)


def _scan_entry_points() -> dict[str, metadata.EntryPoint]:
    global _entry_points
    if _entry_points is None:
        _entry_points = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points


def known_names() -> list[str]:
    """Backbone names usable here without an import path, built-ins first."""
    names = [*BUILTIN_BACKBONES, *_registered]
    return names + [n for n in _scan_entry_points() if n not in names]


def is_import_path(name: str) -> bool:
    return bool(IMPORT_PATH.match(name))


def find_backbone(name: str, near: str | Path | None = None, trust_code: bool = True
                  ) -> Backbone | None:
    """The declaration a backbone name leads to; None for an import path not trusted.

    Raises BackboneUnavailable for an unknown name or a factory that cannot be imported.
    """
    if name in BUILTIN_BACKBONES:
        return BUILTIN_BACKBONES[name]
    if name in _registered:
        return _registered[name]
    entry = _scan_entry_points().get(name)
    if entry is not None:
        try:
            loaded = entry.load()
        except Exception as exc:  # an installed package's bug, said in one line
            raise BackboneUnavailable(f"the backbone {name!r} of entry point {entry.value!r} "
                                      f"cannot be loaded: {type(exc).__name__}: {exc}") from None
        return _as_declaration(name, loaded, "entry point")
    if not is_import_path(name):
        raise BackboneUnavailable(f"unknown backbone {name!r}")
    if not trust_code:
        return None
    return _as_declaration(name, import_object(name, near), "import path")


def _as_declaration(name: str, loaded: Any, origin: str) -> Backbone:
    if isinstance(loaded, Backbone):
        return replace(loaded, name=name, origin=origin)
    if not callable(loaded):
        raise BackboneUnavailable(f"{name}: expected a factory function or a "
                                  f"condsearch.Backbone, got {type(loaded).__name__}")
    declared = getattr(loaded, DECLARATION_ATTR, None)
    if isinstance(declared, Backbone):
        return replace(declared, name=name, origin=origin)
    return Backbone(name=name, factory=loaded, origin=origin)


def import_object(path: str, near: str | Path | None = None) -> Any:
    """`package.module:attribute`, imported from sys.path or else from the folder `near`."""
    module_name, _, attribute = path.partition(":")
    top = module_name.split(".")[0]
    folder = Path(near).resolve() if near is not None else None
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != top or folder is None or not (
                    (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file()):
                raise
            sys.path.insert(0, str(folder))
            module = importlib.import_module(module_name)
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return obj
    except ModuleNotFoundError as exc:
        where = f"sys.path and {folder}" if folder is not None else "sys.path"
        raise BackboneUnavailable(
            f"cannot import {path}: no module named {exc.name!r} (looked in {where}); install "
            f"the package that provides it or put its folder on PYTHONPATH") from None
    except AttributeError as exc:
        raise BackboneUnavailable(f"cannot import {path}: {exc}") from None
    except Exception as exc:
        raise BackboneUnavailable(f"importing {module_name} for {path} failed: "
                                  f"{type(exc).__name__}: {exc}") from None


def factory_of(decl: Backbone, near: str | Path | None = None) -> Callable[..., Any]:
    """The callable that builds a backbone's model, importing it when named by path."""
    if callable(decl.factory):
        return decl.factory
    return import_object(decl.factory, near)
