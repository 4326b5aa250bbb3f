"""Parameter counts of the token transformer, so an unsatisfiable `max_params` is caught up front.

The formula mirrors condsearch/models (Tokenizer, TransformerLayer, ClassHead, EarlyExit) without
importing torch; tests check it against the built modules.
"""

from __future__ import annotations

from typing import Any

from condsearch.space._distributions import Distribution, highest, lowest

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


def exit_count(exit_cfg: dict[str, Any], depth: int) -> int:
    """How many exit heads an enabled early-exit component adds (as TokenTransformer places them)."""
    if exit_cfg.get("positions"):
        return len(set(exit_cfg["positions"]))
    every = int(exit_cfg.get("every") or 1)
    return len(range(every, depth, every))


def token_transformer_params(
    dim: int, depth: int, mlp_ratio: float, patch_size: int, exits: int, io: dict[str, Any]
) -> int:
    """Trainable parameters of a TokenTransformer with `exits` early-exit heads."""
    d, classes = dim, int(io["num_classes"])
    if io["input_kind"] == "image":
        c, h, w = io["input_shape"]
        embed = c * patch_size * patch_size * d + d  # Conv2d patch projection
        tokens = (h // patch_size) * (w // patch_size)
    else:
        embed = int(io["vocab_size"]) * d
        tokens = int(io["input_shape"][0])
    tokenizer = embed + d + (tokens + 1) * d  # + CLS token + positions
    hidden = int(d * mlp_ratio)
    # LayerNorm x2, qkv, proj, MLP in and out
    layer = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
    head = 2 * d + d * classes + classes  # LayerNorm + Linear
    return tokenizer + depth * layer + (1 + exits) * head


def arch_params(model: dict[str, Any], io: dict[str, Any]) -> int:
    """Parameter count of the model a resolved `arch["model"]` describes."""
    exit_cfg = (model.get("components") or {}).get("early_exit") or {}
    depth = int(model["depth"])
    exits = exit_count(exit_cfg, depth) if exit_cfg.get("enabled") else 0
    return token_transformer_params(int(model["dim"]), depth, float(model.get("mlp_ratio", 2.0)),
                                    int(model.get("patch_size", 2)), exits, io)


def smallest_arch(
    model: dict[str, Distribution], early_exit: dict[str, Distribution], io: dict[str, Any]
) -> tuple[int, dict[str, Any]] | None:
    """The fewest parameters any point of the space can have, and that point; None if undecidable.

    Parameters grow with dim, depth, mlp_ratio and exit heads, so their lowest values give the
    minimum; patch_size is not monotone (kernel vs. positions), so each admissible one is tried.
    """
    dims, heads = model["dim"].values(), model["heads"].values()
    if dims is None:
        dims = [lowest(model["dim"])]
    if heads is not None:
        dims = [d for d in dims if any(d % h == 0 for h in heads)]
    if not dims:
        return None
    dim, depth, ratio = min(dims), lowest(model["depth"]), lowest(model["mlp_ratio"])
    patches: list[Any] = [2]
    if io["input_kind"] == "image":
        _, h, w = io["input_shape"]
        patches = [p for p in (model["patch_size"].values() or []) if h % p == 0 and w % p == 0]
        if not patches:
            return None
    exits = _fewest_exits(early_exit, depth)
    best = min((token_transformer_params(dim, depth, ratio, p, exits, io), p) for p in patches)
    point = {"dim": dim, "depth": depth, "mlp_ratio": ratio, "early_exit_heads": exits}
    if io["input_kind"] == "image":
        point["patch_size"] = best[1]
    return best[0], point


def _fewest_exits(early_exit: dict[str, Distribution], depth: int) -> int:
    if False in early_exit["enabled"].values():
        return 0
    counts = []
    for positions in early_exit["positions"].values() or [None]:
        if positions:
            counts.append(len(set(positions)))
        else:
            counts.append(exit_count({"every": highest(early_exit["every"])}, depth))
    return min(counts)

