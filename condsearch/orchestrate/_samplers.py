"""The sampler a search space names: one of Optuna's, or an NNI tuner (the `nni` extra)."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

SAMPLERS = ("tpe", "nsga2", "random", "gp")


def make_sampler(spec: dict[str, Any], seed: int, space: Any = None) -> optuna.samplers.BaseSampler:
    """Build the sampler; TPE is multivariate and grouped so conditional parameters are modelled
    jointly within each branch of the space. An NNI tuner (`spec["nni"]`) needs the space, whose
    structure it is given in NNI's format."""
    name, options = spec.get("name", "tpe"), dict(spec.get("options") or {})
    if spec.get("nni"):
        if space is None:
            raise ValueError("an NNI tuner needs the search space; pass space=")
        from condsearch.interop import NniSampler

        return NniSampler(spec["nni"], space, seed, options, budget=spec.get("budget"),
                          penalty=spec.get("penalty", 1.0))
    if name == "tpe":
        defaults = {"multivariate": True, "group": True}
        with warnings.catch_warnings():
            # `group` is what makes TPE model a conditional space well; we opt in knowingly.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, **{**defaults, **options})
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **options)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **options)
    raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
