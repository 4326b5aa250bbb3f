"""AdaTape (Xue et al. 2023): each sample appends as many tape tokens as its reader decides.

The block owns the Adaptive Tape Reader (ATR), the transformer layers that run after the tape is
appended and the classifier head, because samples that read different numbers of tape tokens
run those layers on sequences of different lengths. Nothing is padded: samples are grouped by
tape length and each group runs the layers on its own [tokens ; tape[:L]] sequence, so no
attention mask is needed and a sample that read 2 tape tokens never computes the slots of 8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from condsearch.blocks._protocol import AdaptiveBlock
from condsearch.cost import owners

BANKS = ("learned", "input")


class AdaTape(AdaptiveBlock):
    """Adaptive Tape Reader, then `layers` and `head` on [tokens ; tape], grouped by tape length.

    The query is the CLS token (h[:, 0]); the bank is a learned [M, dim] parameter or
    `bank_embed(x)` ([n, M, dim], built from the raw model input). q and the bank share one
    LayerNorm; keys are `key_proj` of the normed bank. Each step a running sample scores the
    unused bank entries (q . key / sqrt(dim)), takes the top `tokens_per_step`, softmaxes their
    scores into w, appends the merged token sum_j w_j bank[idx_j] (plus a tape-position
    embedding), retires those entries, adds w_0 to its halting mass and moves its query to
    (q + key of the merged normed entries) / 2. It halts after the step at which the mass
    reaches `theta`, or after `max_tape` steps, so it reads 1..max_tape tokens. Training adds
    the ponder loss `ponder_weight * mean(R)`, where R sums 1 - sum_j w_j^2 over the steps run.
    Each step computes only on the samples still running, in training and in eval alike. With
    tokens_per_step=1 every step adds mass 1, so all samples read min(ceil(theta), max_tape).
    """

    knob_prefix = "adatape"

    def __init__(self, dim: int, layers: Sequence[nn.Module], head: nn.Module, *,
                 bank: str = "learned", bank_size: int = 32,
                 bank_embed: nn.Module | None = None, max_tape: int = 8,
                 tokens_per_step: int = 2, theta: float = 2.0,
                 ponder_weight: float = 0.01) -> None:
        super().__init__()
        if bank not in BANKS:
            raise ValueError(f"bank must be one of {BANKS}, got {bank!r}")
        if bank == "input" and bank_embed is None:
            raise ValueError("bank='input' needs a bank_embed mapping the input x to [n, M, dim]")
        if max_tape < 1 or tokens_per_step < 1:
            raise ValueError(
                f"max_tape and tokens_per_step must be >= 1, got {max_tape} and {tokens_per_step}"
            )
        if theta <= 0:
            raise ValueError(f"theta (the halting budget) must be positive, got {theta}")
        self.max_tape = int(max_tape)
        self.tokens_per_step = int(tokens_per_step)
        if bank == "learned":
            self._check_bank_size(bank_size)
        self.bank_type = bank
        self.theta = float(theta)
        self.ponder_weight = float(ponder_weight)
        self.layers = nn.ModuleList(layers)
        self.head = head
        self.bank_embed = bank_embed
        self.bank = nn.Parameter(torch.empty(bank_size, dim)) if bank == "learned" else None
        self.norm = nn.LayerNorm(dim)
        self.key_proj = nn.Linear(dim, dim)
        self.tape_pos = nn.Parameter(torch.empty(max_tape, dim))
        for p in (self.bank, self.tape_pos):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self._ponder: torch.Tensor | None = None
        self.register_buffer("_length_counts", torch.zeros(max_tape + 1), persistent=False)

    def _check_bank_size(self, size: int) -> None:
        need = self.max_tape * self.tokens_per_step
        if size < need:
            raise ValueError(
                f"tape bank has {size} entries but max_tape ({self.max_tape}) x tokens_per_step "
                f"({self.tokens_per_step}) = {need} distinct entries may be read; "
                "use a larger bank or fewer tape tokens"
            )

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        tape, lengths, _, ponder = self._read(h, x)
        if self.training:
            self._ponder = self.ponder_weight * ponder.mean()
        else:
            self._ponder = None
            self._length_counts += torch.bincount(lengths, minlength=self.max_tape + 1).to(
                self._length_counts.dtype
            )
        outs, order = [], []
        for length in torch.unique(lengths).tolist():
            idx = (lengths == length).nonzero().flatten()
            with owners(idx):
                z = torch.cat([h[idx], tape[idx, :length] + self.tape_pos[:length]], dim=1)
                for layer in self.layers:
                    z = layer(z)
                outs.append(self.head(z))
            order.append(idx)
        return torch.cat(outs)[torch.cat(order).argsort()]

    def read_tape(
        self, h: torch.Tensor, x: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the ATR alone: merged tape tokens [n, max_tape, dim] (zero past each length, no
        position embedding yet), lengths [n], bank indices read [n, max_tape, k] (-1 past)."""
        tape, lengths, indices, _ = self._read(h, x)
        return tape, lengths, indices

    def _bank_rows(self, x: torch.Tensor | None, n: int) -> torch.Tensor:
        if self.bank is not None:
            return self.bank
        if x is None:
            raise ValueError("an input-driven tape bank needs the raw input: call forward(h, x)")
        rows = self.bank_embed(x)
        if rows.dim() != 3 or rows.shape[0] != n:
            raise ValueError(f"bank_embed must return [n={n}, M, dim], got {tuple(rows.shape)}")
        self._check_bank_size(rows.shape[1])
        return rows

    def _read(
        self, h: torch.Tensor, x: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n, _, d = h.shape
        k, steps = self.tokens_per_step, self.max_tape
        rows = self._bank_rows(x, n)  # [M, d] shared, or [n, M, d] per sample
        per_sample = rows.dim() == 3
        normed = self.norm(rows)
        both = torch.cat([rows, normed], dim=-1)  # a merged token and its normed twin in one bmm
        tape = h.new_zeros(n, steps, d)
        indices = torch.full((n, steps, k), -1, dtype=torch.long, device=h.device)
        ponder = h.new_zeros(n)
        # State of the samples still running (compacted as they halt); `alive` maps them to rows.
        alive = torch.arange(n, device=h.device)
        q = self.norm(h[:, 0])
        mass = h.new_zeros(n)
        used = torch.zeros(n, rows.shape[-2], dtype=torch.bool, device=h.device)
        for step in range(steps):
            with owners(alive):
                # q . (W z + b) = (q W) . z + q . b: projecting the query instead of the bank keeps
                # every product per sample; q . b is the same for all entries, so top-k and the
                # softmax ignore it.
                qw = q @ self.key_proj.weight / math.sqrt(d)
                if per_sample:
                    scores = torch.bmm(qw.unsqueeze(1), normed.transpose(1, 2)).squeeze(1)
                else:
                    scores = qw @ normed.T
                top, idx = scores.masked_fill(used, float("-inf")).topk(k, dim=-1)
                w = top.softmax(-1)
                if per_sample:
                    cand = both.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2 * d))
                else:
                    cand = both[idx]  # [r, k, 2d]
                token, key_in = torch.bmm(w.unsqueeze(1), cand).squeeze(1).split(d, dim=-1)
                q = (q + self.key_proj(key_in)) / 2
            tape[alive, step] = token.to(tape.dtype)  # bf16 under autocast
            indices[alive, step] = idx
            if self.training:
                ponder = ponder.index_add(0, alive, (1 - (w * w).sum(-1)).to(ponder.dtype))
            mass = mass + w[:, 0]
            keep = mass < self.theta
            if step == steps - 1 or not keep.any():
                break
            used = used.scatter(1, idx, True)
            if not keep.all():
                alive, q, mass, used = alive[keep], q[keep], mass[keep], used[keep]
                if per_sample:
                    normed, both = normed[keep], both[keep]
        lengths = (indices[:, :, 0] >= 0).sum(1)
        return tape, lengths, indices, ponder

    def aux_loss(self, targets: torch.Tensor) -> torch.Tensor | None:
        return self._ponder if self.training else None

    def routing_stats(self) -> dict[str, float]:
        total = float(self._length_counts.sum())
        if total == 0:
            return {}
        frac = self._length_counts / total
        length = torch.arange(self.max_tape + 1, dtype=frac.dtype, device=frac.device)
        mean = (frac * length).sum()
        stats = {
            "tape_length_mean": float(mean),
            "tape_length_var": float((frac * (length - mean) ** 2).sum()),
        }
        stats.update({f"tape_length.{i}": float(frac[i]) for i in range(1, self.max_tape + 1)})
        return stats

    def reset_stats(self) -> None:
        self._length_counts.zero_()

    def stats_state(self) -> dict[str, torch.Tensor]:
        return {"length_counts": self._length_counts.clone()}

    def load_stats_state(self, state: dict[str, torch.Tensor]) -> None:
        self._length_counts.copy_(state["length_counts"])

    def inference_knobs(self) -> dict[str, float]:
        return {"theta": self.theta}

    def set_inference_knobs(self, theta: float | None = None, **rest: float) -> None:
        super().set_inference_knobs(**rest)
        if theta is not None:
            if theta <= 0:
                raise ValueError(f"theta must be positive, got {theta}")
            self.theta = float(theta)
