"""Backbones that host the adaptive blocks, and build_model()."""

from condsearch.models._build import BACKBONES, build_model
from condsearch.models._cigt import CIGT
from condsearch.models._nac import NAC
from condsearch.models._token_transformer import TokenTransformer

__all__ = ["BACKBONES", "CIGT", "NAC", "TokenTransformer", "build_model"]
