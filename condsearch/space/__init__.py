"""Search spaces: YAML files, validated with file:line messages, sampled by Optuna trials.

Backbones and components are declared once, torch-free (`declared/`); a user's backbone enters
through `register_backbone`, the `condsearch.backbones` entry-point group or an import path.
Importing this package loads neither torch, numpy nor Optuna, so `condsearch validate` is quick.
"""

from condsearch._names import OBJECTIVES
from condsearch.space._declaration import Backbone, CheckContext, Component, complete
from condsearch.space._distributions import Choice, Fixed, FloatRange, IntRange, ParamSpec
from condsearch.space._errors import Problem, SpaceError
from condsearch.space._registry import (
    BackboneUnavailable,
    declare_backbone,
    factory_of,
    find_backbone,
    known_names,
    register_backbone,
    unregister_backbone,
)
from condsearch.space._schema import (
    BUILTIN_DATASETS,
    SAMPLERS,
    SWEEP_KNOBS,
    TRAIN_PARAMS,
    knob_param,
)
from condsearch.space._space import SearchSpace, load_space, parse_space
from condsearch.space.declared import BUILTIN_BACKBONES, BUILTIN_COMPONENTS

#: the public name of a key's declaration: type, range, default and help
Param = ParamSpec

__all__ = [
    "BUILTIN_BACKBONES",
    "BUILTIN_COMPONENTS",
    "BUILTIN_DATASETS",
    "OBJECTIVES",
    "SAMPLERS",
    "SWEEP_KNOBS",
    "TRAIN_PARAMS",
    "Backbone",
    "BackboneUnavailable",
    "CheckContext",
    "Choice",
    "Component",
    "Fixed",
    "FloatRange",
    "IntRange",
    "Param",
    "ParamSpec",
    "Problem",
    "SearchSpace",
    "SpaceError",
    "complete",
    "declare_backbone",
    "factory_of",
    "find_backbone",
    "knob_param",
    "known_names",
    "load_space",
    "parse_space",
    "register_backbone",
    "unregister_backbone",
]
