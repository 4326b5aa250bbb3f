"""Backbones that host the adaptive blocks, and build_model()."""

from condsearch.models._build import BACKBONES, build_model
from condsearch.models._token_transformer import TokenTransformer

__all__ = ["BACKBONES", "TokenTransformer", "build_model"]
