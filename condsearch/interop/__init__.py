"""Interoperability with NNI: its `search_space.json` format and its tuners (the `nni` extra).

The format conversion needs no NNI; `NniSampler` imports NNI when it is built and says which
command installs it when it is missing.
"""

from typing import Any

from condsearch.interop._nni_format import (
    ConvertError,
    document_to_yaml,
    nni_to_document,
    space_to_nni,
)

__all__ = [
    "INSTALL_NNI", "ConvertError", "NniSampler", "NniUnavailable", "check_with_nni",
    "document_to_yaml", "flatten_parameters", "fold_score", "nni_to_document", "require_nni",
    "space_to_nni",
]
_SAMPLER_NAMES = ("INSTALL_NNI", "NniSampler", "NniUnavailable", "flatten_parameters",
                  "fold_score", "require_nni")


def __getattr__(name: str) -> Any:
    # The sampler module imports Optuna and the search package; load it only when asked.
    if name in _SAMPLER_NAMES:
        from condsearch.interop import _nni_sampler

        return getattr(_nni_sampler, name)
    raise AttributeError(f"module 'condsearch.interop' has no attribute {name!r}")


def check_with_nni(search_space: dict[str, Any]) -> None:
    """Have NNI itself read a search space: its validator, then one draw of its random tuner."""
    from condsearch.interop._nni_sampler import require_nni

    require_nni("convert --to nni")
    from nni.algorithms.hpo.random_tuner import RandomTuner
    from nni.common.hpo_utils import validate_search_space

    validate_search_space(search_space, raise_exception=True)
    tuner = RandomTuner(seed=0)
    tuner.update_search_space(search_space)
    tuner.generate_parameters(0)
