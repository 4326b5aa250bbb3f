"""The sampler a search space names, built through a registry of sampler kinds.

Optuna's samplers are registered here; any other kind (an NNI tuner: the `nni` extra) is a plugin
found through the entry-point group `condsearch.samplers`, so this package never imports one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import optuna

#: the entry-point group a plugin declares its sampler factory in (`kind = "module:factory"`)
ENTRY_POINT_GROUP = "condsearch.samplers"
#: builds an Optuna sampler from (the space's `sampler` spec, the seed, the SearchSpace or None)
SamplerFactory = Callable[[dict[str, Any], int, Any], optuna.samplers.BaseSampler]

_FACTORIES: dict[str, SamplerFactory] = {}


def register_sampler(kind: str, factory: SamplerFactory) -> None:
    """Make `make_sampler` build sampler specs of `kind` with `factory`; a later call replaces."""
    _FACTORIES[kind] = factory


def registered_kinds() -> tuple[str, ...]:
    """The sampler kinds registered so far (plugins not yet loaded are not among them)."""
    return tuple(_FACTORIES)


def sampler_kind(spec: dict[str, Any]) -> str:
    """The registry key of a sampler spec: `nni` for an NNI tuner, else the sampler's name."""
    return "nni" if spec.get("nni") else str(spec.get("name", "tpe"))


def make_sampler(spec: dict[str, Any], seed: int, space: Any = None) -> optuna.samplers.BaseSampler:
    """Build the sampler `spec` (a space's `sampler`) names; a plugin (an NNI tuner) is given the
    space, whose structure it may need."""
    return _factory(sampler_kind(spec))(spec, seed, space)


def _factory(kind: str) -> SamplerFactory:
    """The factory registered for `kind`, else the one a plugin declares for it (loading the
    plugin, which may register itself as it is imported)."""
    if kind not in _FACTORIES:
        plugins = entry_points(group=ENTRY_POINT_GROUP)
        found = [ep for ep in plugins if ep.name == kind]
        if not found:
            known = sorted({*_FACTORIES, *(ep.name for ep in plugins)})
            raise ValueError(f"unknown sampler {kind!r}; known: {', '.join(known)} (a plugin "
                             f"declares one in the entry-point group {ENTRY_POINT_GROUP})")
        factory = found[0].load()
        _FACTORIES.setdefault(kind, factory)
    return _FACTORIES[kind]


def _tpe(spec: dict[str, Any], seed: int, space: Any) -> optuna.samplers.BaseSampler:
    """TPE, multivariate and grouped so conditional parameters are modelled jointly within each
    branch of the space."""
    defaults = {"multivariate": True, "group": True}
    with warnings.catch_warnings():
        # `group` is what makes TPE model a conditional space well; we opt in knowingly.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **{**defaults, **_options(spec)})


def _options(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(spec.get("options") or {})


#: Optuna's samplers, one per name in `condsearch._names.SAMPLERS`
_BUILTIN: dict[str, SamplerFactory] = {
    "tpe": _tpe,
    "nsga2": lambda spec, seed, space: optuna.samplers.NSGAIISampler(seed=seed, **_options(spec)),
    "random": lambda spec, seed, space: optuna.samplers.RandomSampler(seed=seed, **_options(spec)),
    "gp": lambda spec, seed, space: optuna.samplers.GPSampler(seed=seed, **_options(spec)),
}
_FACTORIES.update(_BUILTIN)
