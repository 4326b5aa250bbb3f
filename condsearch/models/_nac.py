"""The NAC backbone: tokens in, a circuit of attentive modules, logits from the output module."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from condsearch.blocks.nac import Circuit
from condsearch.models._embed import TokenEmbed
from condsearch.space import complete
from condsearch.space.declared.nac import NAC as NAC_DECLARATION


class PatchTokens(nn.Module):
    """Non-overlapping p x p patches of a (C, H, W) image, flattened and linearly projected.

    The same map and FLOPs as a stride-p convolution (`PatchEmbed`), written as a reshape and
    a matmul, which runs several times faster on CPU at these sizes.
    """

    def __init__(self, channels: int, height: int, width: int, patch: int, dim: int) -> None:
        super().__init__()
        if height % patch or width % patch:
            raise ValueError(f"patch_size {patch} does not divide the image size {height}x{width}")
        self.patch = patch
        self.proj = nn.Linear(channels * patch * patch, dim)
        self.num_tokens = (height // patch) * (width // patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return self.proj(x.reshape(b, self.num_tokens, c * p * p))


class NAC(nn.Module):
    """Neural Attentive Circuits as a classifier over patches (images) or token ids.

    `model` is the arch's model section, `{"backbone": "nac", "nac": {...}}` with the keys
    declared in `condsearch/space/declared/nac.py`; `io` is the task's `info()`. The input becomes tokens (patches or token
    embeddings, plus learned positions); `Circuit` reads them into its input modules, propagates
    through its mediators and reads out one output module, whose state a LayerNorm and a linear
    layer turn into logits. The inference knob is `nac.keep_ratio` (mediators that run).
    """

    def __init__(self, model: dict[str, Any], io: dict[str, Any]) -> None:
        super().__init__()
        given = dict(model.get("nac") or {})
        unknown = sorted(set(given) - set(NAC_DECLARATION.params))
        if unknown:
            raise ValueError(f"unknown nac settings {unknown}; known: {sorted(NAC_DECLARATION.params)}")
        cfg = complete(NAC_DECLARATION.params, given)
        dim = int(cfg["dim"])
        if io["input_kind"] == "image":
            c, h, w = io["input_shape"]
            self.embed: nn.Module = PatchTokens(c, h, w, int(cfg["patch_size"]), dim)
        else:
            self.embed = TokenEmbed(int(io["vocab_size"]), int(io["input_shape"][0]), dim)
        self.pos = nn.Parameter(torch.randn(1, self.embed.num_tokens, dim) * 0.02)
        self.circuit = Circuit(
            dim, input_modules=int(cfg["input_modules"]), mediators=int(cfg["mediators"]),
            layers=int(cfg["layers"]), heads=int(cfg["heads"]),
            signature_dim=int(cfg["signature_dim"]), code_dim=int(cfg["code_dim"]),
            tau=float(cfg["tau"]), mlp_ratio=float(cfg["mlp_ratio"]),
            keep_ratio=float(cfg["keep_ratio"]), dropout=float(cfg["dropout"]),
            readout_inputs=bool(cfg["readout_inputs"]))
        self.norm = nn.LayerNorm(dim)
        # PyTorch's default initialisation: the ViT-style std 0.02 makes every code-conditioned
        # path start so small that the circuit barely learns in a short budget.
        self.head = nn.Linear(dim, int(io["num_classes"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.circuit(self.embed(x) + self.pos)))
