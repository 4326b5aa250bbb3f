"""Parameter counts of the token transformer, so an unsatisfiable `max_params` is caught up front.

The formula mirrors condsearch/models (Tokenizer, TransformerLayer, ClassHead, EarlyExit) without
importing torch; tests check it against the built modules.
"""

from __future__ import annotations

from typing import Any

from condsearch.space._distributions import Distribution, highest, lowest
from condsearch.space._layout import component, exit_positions, moe_layers, selection_layers

#: input description of the data sets whose shape is known before loading them
_IMAGE_IO = {"digits": ((1, 8, 8), 10), "fashion_mnist": ((1, 28, 28), 10)}


def known_io(task: dict[str, Any]) -> dict[str, Any] | None:
    """The `Task.info()` a data set will have, when it is known without loading it."""
    dataset = task.get("dataset")
    if dataset in _IMAGE_IO:
        shape, classes = _IMAGE_IO[dataset]
        return {"input_kind": "image", "input_shape": list(shape), "num_classes": classes,
                "vocab_size": None}
    if dataset == "parity":
        return {"input_kind": "sequence", "input_shape": [int(task.get("length", 16))],
                "num_classes": 2, "vocab_size": 3}
    return None


def _mlp(d: int, hidden: int) -> int:
    return d * hidden + hidden + hidden * d + d


def arch_params(model: dict[str, Any], io: dict[str, Any]) -> int:
    """Trainable parameters of the TokenTransformer a resolved `arch["model"]` describes."""
    d, depth, classes = int(model["dim"]), int(model["depth"]), int(io["num_classes"])
    patch = int(model.get("patch_size", 2))
    hidden = int(d * float(model.get("mlp_ratio", 2.0)))
    if io["input_kind"] == "image":
        c, h, w = io["input_shape"]
        embed = c * patch * patch * d + d  # Conv2d patch projection
        tokens = (h // patch) * (w // patch)
    else:
        embed = int(io["vocab_size"]) * d
        tokens = int(io["input_shape"][0])
    total = embed + d + (tokens + 1) * d  # + CLS token + positions
    moe, select = component(model, "moe"), component(model, "token_selection")
    moe_at = set(moe_layers(moe, depth)) if moe else set()
    select_at = set(selection_layers(select, depth)) if select else set()
    experts = int(moe.get("experts", 4))
    scorer = (d + 1) if select.get("scorer", "learned") == "learned" else 2 * (d * 16 + 16)
    for i in range(1, depth + 1):
        total += 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d  # LayerNorms, qkv, proj
        total += d * experts + experts * _mlp(d, hidden) if i in moe_at else _mlp(d, hidden)
        total += 2 * d + scorer if i in select_at else 0
    head = 2 * d + d * classes + classes  # LayerNorm + Linear
    tape = component(model, "adatape")
    if tape:
        return total + head + adatape_params(tape, d, embed, tokens)
    early = component(model, "early_exit")
    return total + (1 + len(exit_positions(early, depth) if early else [])) * head


def adatape_params(tape: dict[str, Any], d: int, embed: int, tokens: int) -> int:
    """AdaTape's own parameters: bank (learned, or a second embedding with positions), the shared
    LayerNorm, the key projection and the tape positions."""
    bank = int(tape.get("bank_size", 32)) * d if tape.get("bank", "learned") == "learned" else (
        embed + tokens * d)
    return bank + 2 * d + (d * d + d) + int(tape.get("max_tape", 8)) * d


def smallest_arch(
    model: dict[str, Distribution], components: dict[str, dict[str, Distribution]],
    io: dict[str, Any],
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
            count = arch_params(point, io)
            if best is None or count < best[0]:
                heads_n = len(exit_positions(early, depth)) if early["enabled"] else 0
                shown = {"dim": dim, "depth": depth, "mlp_ratio": ratio, "early_exit_heads": heads_n}
                if io["input_kind"] == "image":
                    shown["patch_size"] = patch
                best = (count, shown)
    return best


def _fewest_exit_options(early_exit: dict[str, Distribution]) -> list[dict[str, Any]]:
    if False in early_exit["enabled"].values():
        return [{"enabled": False}]
    every = {"enabled": True, "every": highest(early_exit["every"])}
    return [{"enabled": True, "positions": p} if p else every
            for p in early_exit["positions"].values() or [None]]
