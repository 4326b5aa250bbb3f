"""Token selection: keep the highest-scoring tokens (and CLS); later layers run on those only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks._protocol import AdaptiveBlock

SCORERS = ("learned", "cls_attention")


class TokenSelection(AdaptiveBlock):
    """Drops all but ceil(keep_ratio * tokens) of the non-CLS tokens of every sample.

    Scores come from a learned per-token scorer or from the CLS token's attention over the
    tokens. The kept tokens are gathered, so every later layer really computes on fewer rows.
    The scorer learns through a straight-through factor on the kept tokens (1 in the forward
    pass, the score's gradient in the backward pass).
    """

    knob_prefix = "token_selection"

    def __init__(self, dim: int, keep_ratio: float = 0.5, scorer: str = "learned",
                 key_dim: int = 16) -> None:
        super().__init__()
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
        if not 0 < keep_ratio <= 1:
            raise ValueError(f"keep_ratio must lie in (0, 1], got {keep_ratio}")
        self.scorer = scorer
        self.keep_ratio = float(keep_ratio)
        self.norm = nn.LayerNorm(dim)
        if scorer == "learned":
            self.score = nn.Linear(dim, 1)
        else:
            self.query = nn.Linear(dim, key_dim)
            self.key = nn.Linear(dim, key_dim)
        # tokens kept and tokens seen in eval mode: host counts, so a batch adds no operators
        self._kept = 0
        self._seen = 0

    def kept_tokens(self, tokens: int) -> int:
        return max(1, math.ceil(self.keep_ratio * tokens))

    def _scores(self, h: torch.Tensor) -> torch.Tensor:
        z = self.norm(h)
        if self.scorer == "learned":
            return self.score(z[:, 1:]).squeeze(-1).sigmoid()
        q = self.query(z[:, :1])
        k = self.key(z[:, 1:])
        return (q @ k.transpose(1, 2)).squeeze(1).div(math.sqrt(k.shape[-1])).softmax(-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, t, d = h.shape
        keep = self.kept_tokens(t - 1)
        if keep >= t - 1:
            return h
        scores = self._scores(h)
        top = scores.topk(keep, dim=1).indices.sort(dim=1).values  # keep the tokens' order
        if self.training:
            kept = h[:, 1:].gather(1, top.unsqueeze(-1).expand(n, keep, d))
            s = scores.gather(1, top).unsqueeze(-1)
            kept = kept * (1 + s - s.detach())
            return torch.cat([h[:, :1], kept], dim=1)
        self._kept += n * keep
        self._seen += n * (t - 1)
        # CLS and the kept tokens in one row gather: index_select copies whole rows, where
        # gather with an expanded index and a cat cost two passes and more operators
        rows = F.pad(top + 1, (1, 0))  # token 0 is CLS
        if n > 1:
            rows = rows + torch.arange(0, n * t, t, device=h.device).unsqueeze(1)
        return h.reshape(n * t, d).index_select(0, rows.view(-1)).view(n, keep + 1, d)

    def routing_stats(self) -> dict[str, float]:
        if self._seen == 0:
            return {}
        return {"kept_fraction": self._kept / self._seen}

    def reset_stats(self) -> None:
        self._kept = 0
        self._seen = 0

    def stats_state(self) -> dict[str, torch.Tensor]:
        return {"kept": torch.tensor(self._kept, dtype=torch.int64),
                "seen": torch.tensor(self._seen, dtype=torch.int64)}

    def load_stats_state(self, state: dict[str, torch.Tensor]) -> None:
        self._kept, self._seen = int(state["kept"]), int(state["seen"])

    def inference_knobs(self) -> dict[str, float]:
        return {"keep_ratio": self.keep_ratio}

    def set_inference_knobs(self, keep_ratio: float | None = None, **rest: float) -> None:
        super().set_inference_knobs(**rest)
        if keep_ratio is not None:
            if not 0 < keep_ratio <= 1:
                raise ValueError(f"keep_ratio must lie in (0, 1], got {keep_ratio}")
            self.keep_ratio = float(keep_ratio)
