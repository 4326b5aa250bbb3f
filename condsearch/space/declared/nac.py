"""NAC (Rahaman et al., NeurIPS 2022): a circuit of attentive modules with sparse, signature-
based connectivity; mediators can be dropped at inference. Builder: `condsearch.models.NAC`."""

from __future__ import annotations

from condsearch.space._declaration import Backbone, CheckContext
from condsearch.space._distributions import ParamSpec
from condsearch.space.declared.token_transformer import check_dim_heads, check_patches

PARAMS = {
    "dim": ParamSpec("int", 64, lo=1, doc="module state width"),
    "input_modules": ParamSpec("int", 8, lo=1, doc="modules that read the input tokens"),
    "mediators": ParamSpec("int", 32, lo=1, doc="modules that propagate"),
    "layers": ParamSpec("int", 4, lo=1, doc="propagation layers"),
    "heads": ParamSpec("int", 4, lo=1, doc="attention heads; must divide dim"),
    "signature_dim": ParamSpec("int", 16, lo=1, doc="width of module signatures"),
    "code_dim": ParamSpec("int", 32, lo=1, doc="width of module codes"),
    "tau": ParamSpec("float", 0.9, lo=0, lo_open=True, hi=2,
                     doc="kernel truncation: lower is sparser"),
    "mlp_ratio": ParamSpec("float", 2.0, lo=0, lo_open=True, doc="FFN hidden width / dim"),
    "patch_size": ParamSpec("int", 4, lo=1, doc="square patch side for images"),
    "keep_ratio": ParamSpec("float", 1.0, lo=0, lo_open=True, hi=1,
                            doc="share of mediators run at inference"),
    "dropout": ParamSpec("float", 0.0, lo=0, hi=1, hi_open=True, doc="dropout rate"),
    "readout_inputs": ParamSpec("bool", True,
                                doc="the output module also reads the input modules"),
}


def _check(ctx: CheckContext) -> None:
    check_dim_heads(ctx)
    check_patches(ctx)


NAC = Backbone(
    name="nac", factory="condsearch.models._nac:NAC", params=PARAMS, section="nac",
    knobs={"keep_ratio": ParamSpec("float", lo=0.0, lo_open=True, hi=1.0)},
    check=_check, strict=True, origin="builtin",
    doc="which modules run (sparse signature kernel; modules dropped at inference)")
