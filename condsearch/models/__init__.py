"""Backbones that host the adaptive blocks, and build_model()."""

from condsearch.models._build import backbone_of, build_model, complete_model
from condsearch.models._cigt import CIGT
from condsearch.models._conv_net import ConvNet
from condsearch.models._nac import NAC
from condsearch.models._token_transformer import TokenTransformer

__all__ = ["CIGT", "NAC", "ConvNet", "TokenTransformer", "backbone_of", "build_model",
           "complete_model"]
