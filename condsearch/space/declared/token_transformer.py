"""The token transformer: a ViT-style encoder over patches or token ids, classifying from its CLS
token, hosting every token-level component. Builder: `condsearch.models.TokenTransformer`."""

from __future__ import annotations

from typing import Any

from condsearch.space._declaration import Backbone, CheckContext, Params, complete
from condsearch.space._distributions import Choice, Distribution, Fixed, ParamSpec, highest, lowest
from condsearch.space.declared.adatape import ADATAPE
from condsearch.space.declared.early_exit import EARLY_EXIT, exit_positions
from condsearch.space.declared.moe import MOE, moe_layers
from condsearch.space.declared.token_selection import TOKEN_SELECTION, selection_layers

PARAMS = {
    "dim": ParamSpec("int", required=True, lo=1, doc="token width", typical=64),
    "depth": ParamSpec("int", required=True, lo=1, doc="number of transformer layers",
                       typical=4),
    "heads": ParamSpec("int", 4, lo=1, doc="attention heads; must divide dim"),
    "mlp_ratio": ParamSpec("float", 2.0, lo=0, lo_open=True, doc="MLP hidden width / dim"),
    "patch_size": ParamSpec("int", 2, lo=1, doc="square patch side for images"),
    "dropout": ParamSpec("float", 0.0, lo=0, hi=1, hi_open=True, doc="dropout rate"),
}
COMPONENTS = {c.name: c for c in (ADATAPE, EARLY_EXIT, MOE, TOKEN_SELECTION)}


def check_dim_heads(ctx: CheckContext, dim_key: str = "dim", heads_key: str = "heads") -> None:
    """Some value of dim must split into some number of heads."""
    dim, heads = ctx.params[dim_key], ctx.params[heads_key]
    if isinstance(dim, Fixed) and isinstance(heads, Fixed):
        if dim.value % heads.value:
            ctx.add(heads_key, f"dim ({dim.value}) is not divisible by heads ({heads.value})")
        return
    dims, head_counts = dim.values(), heads.values()
    if dims is not None and head_counts is not None and not any(
        d % h == 0 for d in dims for h in head_counts
    ):
        ctx.add(heads_key, "no value of dim is divisible by any value of heads")


def check_patches(ctx: CheckContext, key: str = "patch_size") -> None:
    """Patches must tile the task's images (known before loading for the built-in sets)."""
    if ctx.io is None or ctx.io["input_kind"] != "image":
        return
    patch: Distribution = ctx.params[key]
    _, h, w = ctx.io["input_shape"]
    size = f"the {h}x{w} images of {ctx.dataset}"
    if isinstance(patch, Fixed):
        if h % patch.value or w % patch.value:
            ctx.add(key, f"patch_size {patch.value} does not divide {size}")
    elif isinstance(patch, Choice):
        for i, p in enumerate(patch.items):
            if h % p or w % p:
                ctx.add((key, "choice", i), f"patch_size {p} does not divide {size}")
    elif not any(h % p == 0 and w % p == 0 for p in patch.values() or []):
        ctx.add(key, f"no patch_size in this range divides {size}")


def _check(ctx: CheckContext) -> None:
    check_dim_heads(ctx)
    check_patches(ctx)


def _depth(params: Params) -> tuple[int, int]:
    return lowest(params["depth"]), highest(params["depth"])


def enabled(model: dict[str, Any], name: str) -> dict[str, Any]:
    """A component's completed settings in a model section, or {} when it is off or absent."""
    cfg = (model.get("components") or {}).get(name) or {}
    return complete(COMPONENTS[name].params, cfg) if cfg.get("enabled") else {}


def _mlp(d: int, hidden: int) -> int:
    return d * hidden + hidden + hidden * d + d


def param_count(model: dict[str, Any], io: dict[str, Any]) -> int:
    """Trainable parameters of the TokenTransformer a model section describes (defaults filled)."""
    model = complete(PARAMS, model)
    d, depth, classes = int(model["dim"]), int(model["depth"]), int(io["num_classes"])
    patch, hidden = int(model["patch_size"]), int(d * float(model["mlp_ratio"]))
    if io["input_kind"] == "image":
        c, h, w = io["input_shape"]
        embed = c * patch * patch * d + d  # Conv2d patch projection
        tokens = (h // patch) * (w // patch)
    else:
        embed = int(io["vocab_size"]) * d
        tokens = int(io["input_shape"][0])
    total = embed + d + (tokens + 1) * d  # + CLS token + positions
    moe, select = enabled(model, "moe"), enabled(model, "token_selection")
    moe_at = set(moe_layers(moe, depth)) if moe else set()
    select_at = set(selection_layers(select, depth)) if select else set()
    scorer = (d + 1) if select and select["scorer"] == "learned" else 2 * (d * 16 + 16)
    for i in range(1, depth + 1):
        total += 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d  # LayerNorms, qkv, proj
        total += d * moe["experts"] + moe["experts"] * _mlp(d, hidden) if i in moe_at else (
            _mlp(d, hidden))
        total += 2 * d + scorer if i in select_at else 0
    head = 2 * d + d * classes + classes  # LayerNorm + Linear
    tape = enabled(model, "adatape")
    if tape:
        bank = int(tape["bank_size"]) * d if tape["bank"] == "learned" else embed + tokens * d
        # bank, the shared LayerNorm, the key projection and the tape positions
        return total + head + bank + 2 * d + (d * d + d) + int(tape["max_tape"]) * d
    early = enabled(model, "early_exit")
    return total + (1 + len(exit_positions(early, depth) if early else [])) * head


def activations(model: dict[str, Any], io: dict[str, Any]) -> int:
    """About the values one sample's forward pass keeps for backward: per layer the LayerNorms,
    q/k/v, attention scores and weights, projections and the MLP's hidden layer (top_k experts'
    worth in an MoE layer), over every token (CLS and the most tape tokens included)."""
    model = complete(PARAMS, model)
    d, depth, heads = int(model["dim"]), int(model["depth"]), int(model["heads"])
    hidden = int(d * float(model["mlp_ratio"]))
    if io["input_kind"] == "image":
        _, h, w = io["input_shape"]
        tokens = (h // int(model["patch_size"])) * (w // int(model["patch_size"]))
    else:
        tokens = int(io["input_shape"][0])
    tape = enabled(model, "adatape")
    t = tokens + 1 + (int(tape["max_tape"]) if tape else 0)
    moe = enabled(model, "moe")
    moe_at = set(moe_layers(moe, depth)) if moe else set()
    total = t * d
    for i in range(1, depth + 1):
        mlp = 2 * t * hidden * (int(moe["top_k"]) if i in moe_at else 1)
        total += 10 * t * d + 2 * heads * t * t + mlp
    return total


def fewest_params(model: Params, components: dict[str, Params], io: dict[str, Any]
                  ) -> tuple[int, dict[str, Any]] | None:
    """The fewest parameters any point of the space can have, and that point; None if undecidable.

    Parameters grow with dim, depth, mlp_ratio and exit heads, so their lowest values give the
    minimum; patch_size is not monotone (kernel vs. positions), so each admissible one is tried.
    A component that can be switched off is off at the minimum; one that is always on makes the
    minimum undecidable here, except early exit, whose fewest heads are counted.
    """
    dims, heads = model["dim"].values(), model["heads"].values()
    if dims is None:
        dims = [lowest(model["dim"])]
    if heads is not None:
        dims = [d for d in dims if any(d % h == 0 for h in heads)]
    if not dims:
        return None
    if any(False not in params["enabled"].values()
           for name, params in components.items() if name != "early_exit"):
        return None
    dim, depth, ratio = min(dims), lowest(model["depth"]), lowest(model["mlp_ratio"])
    patches: list[Any] = [2]
    if io["input_kind"] == "image":
        _, h, w = io["input_shape"]
        patches = [p for p in (model["patch_size"].values() or []) if h % p == 0 and w % p == 0]
        if not patches:
            return None
    best: tuple[int, dict[str, Any]] | None = None
    for early in _fewest_exit_options(components["early_exit"]):
        for patch in patches:
            point = {"dim": dim, "depth": depth, "mlp_ratio": ratio, "patch_size": patch,
                     "components": {"early_exit": early}}
            count = param_count(point, io)
            if best is None or count < best[0]:
                heads_n = (len(exit_positions(complete(EARLY_EXIT.params, early), depth))
                           if early["enabled"] else 0)
                shown = {"dim": dim, "depth": depth, "mlp_ratio": ratio, "early_exit_heads": heads_n}
                if io["input_kind"] == "image":
                    shown["patch_size"] = patch
                best = (count, shown)
    return best


def _fewest_exit_options(early_exit: Params) -> list[dict[str, Any]]:
    if False in early_exit["enabled"].values():
        return [{"enabled": False}]
    every = {"enabled": True, "every": highest(early_exit["every"])}
    return [{"enabled": True, "positions": p} if p else every
            for p in early_exit["positions"].values() or [None]]


TOKEN_TRANSFORMER = Backbone(
    name="token_transformer", factory="condsearch.models._token_transformer:TokenTransformer",
    params=PARAMS, section=None, hosts=tuple(COMPONENTS), check=_check, depth=_depth,
    param_count=param_count, activations=activations, fewest_params=fewest_params,
    strict=True, origin="builtin",
    doc="a ViT-style encoder over patches or token ids, with every token-level component")
