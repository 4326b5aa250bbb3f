"""Search spaces: YAML files, validated with file:line messages, sampled by Optuna trials.

Importing this package loads neither torch, numpy nor Optuna, so `condsearch validate` is quick.
"""

from condsearch.space._distributions import Choice, Fixed, FloatRange, IntRange
from condsearch.space._errors import Problem, SpaceError
from condsearch.space._schema import BUILTIN_DATASETS, OBJECTIVES, SAMPLERS, SWEEP_KNOBS, knob_param
from condsearch.space._space import SearchSpace, load_space, parse_space

__all__ = [
    "BUILTIN_DATASETS",
    "OBJECTIVES",
    "SAMPLERS",
    "SWEEP_KNOBS",
    "Choice",
    "Fixed",
    "FloatRange",
    "IntRange",
    "Problem",
    "SearchSpace",
    "SpaceError",
    "knob_param",
    "load_space",
    "parse_space",
]
