"""The built-in components and backbones, each declared in its own module (see `docs/extending.md`).

The convolutional `conv_net` backbone is not listed here: it enters through the
`condsearch.backbones` entry point, as a user's package would (`declared/conv_net.py`).
"""

from condsearch.space.declared.cigt import CIGT
from condsearch.space.declared.nac import NAC
from condsearch.space.declared.token_transformer import COMPONENTS, TOKEN_TRANSFORMER

#: components in sampling order: AdaTape first, so the components it excludes are not sampled
BUILTIN_COMPONENTS = COMPONENTS
BUILTIN_BACKBONES = {b.name: b for b in (TOKEN_TRANSFORMER, CIGT, NAC)}

__all__ = ["BUILTIN_BACKBONES", "BUILTIN_COMPONENTS"]
