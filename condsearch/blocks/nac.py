"""Neural Attentive Circuits (Rahaman, Weiss et al., NeurIPS 2022): modules wired by a kernel.

Every module u has a learned signature s_u, a learned code c_u and a state. The code makes the
shared weights compute a different function per module (`ModFC`); the signatures decide who
talks to whom (`circuit_log_kernel`): d_uv = 1 - cos(s_u, s_v), K_uv = exp(-d_uv / b) where
d_uv < tau and 0 elsewhere, and log K is added to the attention logits (`kernel_attention`).
`Circuit` runs the whole executor: input modules read the tokens, mediators propagate, one
output module reads out. At inference it can drop mediators (the `keep_ratio` knob).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks._eval_constants import CachesEvalConstants, eval_constants
from condsearch.blocks._protocol import AdaptiveBlock


class FrozenModFC(NamedTuple):
    """A ModFC's constants in eval mode: its code scales [U, in], W^T [in, out] and b."""

    scale: torch.Tensor
    weight_t: torch.Tensor
    bias: torch.Tensor | None


def apply_modfc(fc: ModFC, x: torch.Tensor, constants: torch.Tensor | FrozenModFC) -> torch.Tensor:
    """`fc(x, scale)`, or with eval constants the same map as one `addmm` on a weight
    transposed once, with no module call: at batch size 1 those fixed costs are most of it."""
    if type(constants) is not FrozenModFC:
        return fc(x, constants)
    scale, weight_t, bias = constants
    y = x * scale
    if x.dim() != 2:
        y = y.view(-1, weight_t.shape[0])
    y = torch.mm(y, weight_t) if bias is None else torch.addmm(bias, y, weight_t)
    return y if x.dim() == 2 else y.view(*x.shape[:-1], weight_t.shape[1])


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)` without the module call."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class ModFC(nn.Module):
    """Module-conditioned linear layer: y = W (x * LN(W_c c_u)) + b.

    W and b are shared by every module; each module's code only rescales the input features
    (LayerNorm without affine parameters, as the official ModFC's default). `code_scale` turns
    codes [U, code_dim] into scales [U, in_features]; `forward` applies them to x [..., U, in].
    `constants(codes, frozen=True)` gives what `apply_modfc` needs in eval mode.
    """

    def __init__(self, in_features: int, out_features: int, code_dim: int,
                 bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.code_proj = nn.Linear(code_dim, in_features, bias=False)

    def code_scale(self, codes: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(self.code_proj(codes), (self.linear.in_features,))

    def constants(self, codes: torch.Tensor, frozen: bool) -> torch.Tensor | FrozenModFC:
        """The code scales of `codes`; when `frozen`, with W^T and b for `apply_modfc`."""
        scale = self.code_scale(codes)
        if not frozen:
            return scale
        bias = self.linear.bias
        return FrozenModFC(scale, self.linear.weight.T.contiguous(),
                           None if bias is None else bias.detach())

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.linear(x * scale)


def module_distance(signatures: torch.Tensor) -> torch.Tensor:
    """d_uv = 1 - cos(s_u, s_v) for signatures [U, k]; exactly 0 on the diagonal."""
    s = F.normalize(signatures, dim=-1)
    dist = 1.0 - s @ s.T
    eye = torch.eye(dist.shape[0], dtype=torch.bool, device=dist.device)
    return dist.masked_fill(eye, 0.0)


def circuit_log_kernel(signatures: torch.Tensor, bandwidth: torch.Tensor,
                       tau: float) -> torch.Tensor:
    """log K_uv = -d_uv / b where d_uv < tau, -inf where the pair is truncated.

    Every module keeps its link to itself (d_uu = 0 < tau), so no receiver is left without a
    sender. The official code also normalises log K over the senders; that shifts each row of
    the logits by a constant, which the softmax ignores, so it is left out.
    """
    dist = module_distance(signatures)
    return (-dist / bandwidth).masked_fill(dist >= tau, float("-inf"))


def kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                     log_kernel: torch.Tensor | None = None, dropout: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_h) + log K) v for q [B, R, D], k and v [B, S, D], log K [R, S]
    (one sample may also come without its batch dimension: q [R, D], k and v [S, D])."""
    if q.dim() == 2:
        return _one_sample_attention(q, k, v, heads, log_kernel)
    b, r, d = q.shape
    s = k.shape[1]
    if b == 1 and dropout == 0.0:
        return _one_sample_attention(q[0], k[0], v[0], heads, log_kernel).unsqueeze(0)
    q = q.view(b, r, heads, d // heads).transpose(1, 2)
    k = k.view(b, s, heads, d // heads).transpose(1, 2)
    v = v.view(b, s, heads, d // heads).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=log_kernel, dropout_p=dropout)
    return y.transpose(1, 2).reshape(b, r, d)


def _one_sample_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                          log_kernel: torch.Tensor | None) -> torch.Tensor:
    """`kernel_attention` of one sample, q [R, D], k and v [S, D]. The heads are strided views,
    so three batched matmuls do it with no copies; the fused kernel's fixed cost is larger than
    these small products."""
    (r, d), s = q.shape, k.shape[0]
    dh = d // heads
    qh = q.view(r, heads, dh).transpose(0, 1)
    kt = k.view(s, heads, dh).permute(1, 2, 0)
    vh = v.view(s, heads, dh).transpose(0, 1)
    if log_kernel is None:
        logits = torch.bmm(qh, kt).mul_(1.0 / math.sqrt(dh))
    else:
        logits = torch.baddbmm(log_kernel, qh, kt, alpha=1.0 / math.sqrt(dh))
    return torch.bmm(logits.softmax(-1), vh).transpose(0, 1).reshape(r, d)


class FeedForward(nn.Module):
    """Pre-LN code-conditioned MLP with a residual: h + W2(GELU(W1(LN h ; c)) ; c)."""

    def __init__(self, dim: int, hidden: int, code_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = ModFC(dim, hidden, code_dim)
        self.fc2 = ModFC(hidden, dim, code_dim)
        self.drop = nn.Dropout(dropout)

    def constants(self, codes: torch.Tensor, frozen: bool = False) -> tuple:
        return self.fc1.constants(codes, frozen), self.fc2.constants(codes, frozen)

    def forward(self, h: torch.Tensor, scales: tuple) -> torch.Tensor:
        s1, s2 = scales
        y = F.gelu(apply_modfc(self.fc1, _layer_norm(self.norm, h), s1))
        if self.training:
            return h + self.drop(self.fc2(self.drop(y), s2))
        return h + apply_modfc(self.fc2, y, s2)


class KernelAttention(nn.Module):
    """Receivers attend to senders; queries, keys/values and the exit projection are ModFCs
    (queries and exit with the receiver's code, keys and values with the sender's; keys and
    values share one code scale), and the log-kernel is added to the logits."""

    def __init__(self, dim: int, heads: int, code_dim: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q = ModFC(dim, dim, code_dim)
        self.kv = ModFC(dim, 2 * dim, code_dim)
        self.out = ModFC(dim, dim, code_dim)
        self.dropout = dropout

    def constants(self, receiver_codes: torch.Tensor, sender_codes: torch.Tensor,
                  frozen: bool = False) -> tuple:
        return (self.q.constants(receiver_codes, frozen), self.kv.constants(sender_codes, frozen),
                self.out.constants(receiver_codes, frozen))

    def forward(self, receivers: torch.Tensor, senders: torch.Tensor, scales: tuple,
                log_kernel: torch.Tensor) -> torch.Tensor:
        sq, skv, so = scales
        k, v = apply_modfc(self.kv, senders, skv).chunk(2, dim=-1)
        drop = self.dropout if self.training else 0.0
        q = apply_modfc(self.q, receivers, sq)
        return apply_modfc(self.out, kernel_attention(q, k, v, self.heads, log_kernel, drop), so)


class PropagationLayer(nn.Module):
    """Mediators receive from [input modules, mediators] (pre-LN, residual), then an FFN."""

    def __init__(self, dim: int, heads: int, hidden: int, code_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = KernelAttention(dim, heads, code_dim, dropout)
        self.ffn = FeedForward(dim, hidden, code_dim, dropout)
        self.drop = nn.Dropout(dropout)

    def constants(self, receiver_codes: torch.Tensor, sender_codes: torch.Tensor,
                  frozen: bool = False) -> tuple:
        return (self.attn.constants(receiver_codes, sender_codes, frozen),
                self.ffn.constants(receiver_codes, frozen))

    def forward(self, inputs: torch.Tensor, mediators: torch.Tensor, scales: tuple,
                log_kernel: torch.Tensor) -> torch.Tensor:
        n = inputs.shape[-2]
        senders = _layer_norm(self.norm, torch.cat([inputs, mediators], dim=-2))
        y = self.attn(senders[..., n:, :], senders, scales[0], log_kernel)
        mediators = mediators + (self.drop(y) if self.training else y)
        return self.ffn(mediators, scales[1])


class ReadIn(nn.Module):
    """Input modules cross-attend to the tokens with code-conditioned queries and exit
    projection (keys and values of the tokens are a plain linear map), then an FFN."""

    def __init__(self, dim: int, heads: int, hidden: int, code_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.token_norm = nn.LayerNorm(dim)
        self.norm = nn.LayerNorm(dim)
        self.q = ModFC(dim, dim, code_dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = ModFC(dim, dim, code_dim)
        self.ffn = FeedForward(dim, hidden, code_dim, dropout)
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout

    def constants(self, codes: torch.Tensor, frozen: bool = False) -> tuple:
        return (self.q.constants(codes, frozen), self.out.constants(codes, frozen),
                self.ffn.constants(codes, frozen))

    def forward(self, states: torch.Tensor, tokens: torch.Tensor, scales: tuple) -> torch.Tensor:
        sq, so, sffn = scales
        kv = self.kv
        k, v = F.linear(_layer_norm(self.token_norm, tokens), kv.weight, kv.bias).chunk(2, dim=-1)
        drop = self.dropout if self.training else 0.0
        q = apply_modfc(self.q, _layer_norm(self.norm, states), sq)
        y = apply_modfc(self.out, kernel_attention(q, k, v, self.heads, None, drop), so)
        return self.ffn(states + (self.drop(y) if self.training else y), sffn)


class ReadOut(nn.Module):
    """The output module attends to [input modules, mediators, itself] through the kernel
    (itself included, so it always has a sender; the input modules only when given), then an
    FFN."""

    def __init__(self, dim: int, heads: int, hidden: int, code_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = KernelAttention(dim, heads, code_dim, dropout)
        self.ffn = FeedForward(dim, hidden, code_dim, dropout)
        self.drop = nn.Dropout(dropout)

    def constants(self, receiver_codes: torch.Tensor, sender_codes: torch.Tensor,
                  frozen: bool = False) -> tuple:
        return (self.attn.constants(receiver_codes, sender_codes, frozen),
                self.ffn.constants(receiver_codes, frozen))

    def forward(self, output: torch.Tensor, inputs: torch.Tensor | None, mediators: torch.Tensor,
                scales: tuple, log_kernel: torch.Tensor) -> torch.Tensor:
        parts = [mediators, output] if inputs is None else [inputs, mediators, output]
        senders = _layer_norm(self.norm, torch.cat(parts, dim=-2))
        y = self.attn(senders[..., -1:, :], senders, scales[0], log_kernel)
        output = output + (self.drop(y) if self.training else y)
        return self.ffn(output, scales[1])


class Circuit(CachesEvalConstants, AdaptiveBlock):
    """The NAC circuit executor: tokens [B, T, dim] -> output module state [B, dim].

    Modules are ordered [input modules | mediators | output module]; their signatures and codes
    are learned parameters and each initial state is a learned linear map of the module's code.
    Read-in: input modules cross-attend to the tokens. Propagation: `layers` pre-LN layers in
    which mediators attend to [input modules, mediators] with kernel-modulated attention, then
    a code-conditioned FFN. Read-out: the output module attends to [input modules, mediators,
    itself] through the kernel; with `readout_inputs=False` to [mediators, itself] only (the
    official `enable_input_output_communication: false`), so that everything the output
    learns passes through the mediators.

    Module dropping: in eval mode only the ceil(keep_ratio * mediators) most important
    mediators run, as receivers and as senders; the others are sliced out of the states, codes
    and kernel before anything runs, so they cost nothing. The ranking is fixed and does not
    depend on the input: first the mediators the output module hears, by the share of its
    kernel prior each holds (K~_out,v, K~ being K normalised over a receiver's senders), then
    the others by the share they hold through one mediator the output hears (see
    `kept_mediators`). In training every mediator runs whatever `keep_ratio` says.

    The kernel, the code scales of every ModFC, the initial states and the kept set depend on
    the weights only; in eval mode they are computed once per weight version and knob setting
    and reused (like folded constants, with the ModFC weights transposed once for `addmm`), so
    per-sample FLOPs count only per-input work. Weight edits made through `.data` bump no
    version; they are seen after the next `train()` or `eval()`. Every sample runs the same
    modules, so no `owners` scope is needed. One sample in eval mode runs without a batch
    dimension and with attention as three small batched matmuls: at batch size 1 the fixed
    cost of each operator, not the FLOPs, is most of the time.
    """

    knob_prefix = "nac"

    def __init__(self, dim: int, *, input_modules: int = 8, mediators: int = 32, layers: int = 4,
                 heads: int = 4, signature_dim: int = 16, code_dim: int = 32, tau: float = 0.9,
                 mlp_ratio: float = 2.0, keep_ratio: float = 1.0, dropout: float = 0.0,
                 readout_inputs: bool = True) -> None:
        super().__init__()
        if input_modules < 1 or mediators < 1 or layers < 1:
            raise ValueError("a circuit needs at least one input module, one mediator and one "
                             f"layer, got {input_modules}, {mediators}, {layers}")
        if not 0.0 < tau <= 2.0:
            raise ValueError(f"tau must lie in (0, 2] (1 - cos lies in [0, 2]), got {tau}")
        self.num_inputs, self.num_mediators = int(input_modules), int(mediators)
        self.tau = float(tau)
        self.readout_inputs = bool(readout_inputs)
        self.keep_ratio = _check_ratio(keep_ratio)
        total = self.num_inputs + self.num_mediators + 1
        hidden = int(dim * mlp_ratio)
        self.signatures = nn.Parameter(torch.randn(total, signature_dim))
        self.codes = nn.Parameter(torch.randn(total, code_dim))
        self.log_bandwidth = nn.Parameter(torch.zeros(()))  # b = exp(.) = 1.0 at init
        self.seed = nn.Linear(code_dim, dim)
        self.read_in = ReadIn(dim, heads, hidden, code_dim, dropout)
        self.layers = nn.ModuleList(
            PropagationLayer(dim, heads, hidden, code_dim, dropout) for _ in range(layers))
        self.read_out = ReadOut(dim, heads, hidden, code_dim, dropout)
        self._modfcs = [m for m in self.modules() if isinstance(m, ModFC)]
        # the modules whose parameters the eval constants are built from (`_constants`)
        self._constant_sources = (self, self.seed,
                                  *(m for fc in self._modfcs for m in fc.children()))
        self._eval_batches = 0

    @property
    def bandwidth(self) -> torch.Tensor:
        return self.log_bandwidth.exp()

    def log_kernel(self) -> torch.Tensor:
        """log K over all modules [U, U] (rows receive, columns send)."""
        return circuit_log_kernel(self.signatures, self.bandwidth, self.tau)

    def kernel(self) -> torch.Tensor:
        """K over all modules [U, U]: exp(-d/b) where d = 1 - cos < tau, else exactly 0."""
        return self.log_kernel().exp()

    def kept_count(self) -> int:
        """Mediators that run in eval mode: ceil(keep_ratio * mediators), at least 1."""
        return max(1, math.ceil(self.keep_ratio * self.num_mediators - 1e-9))

    def mediator_importance(self, log_kernel: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """How much of the output module's kernel prior each mediator holds [M], directly and
        through one other mediator: (K~_out,v, sum_u K~_out,u K~_u,v), K~ being K normalised
        over each receiver's senders (softmax of log K over them)."""
        log_k = self.log_kernel() if log_kernel is None else log_kernel
        n, m = self.num_inputs, self.num_mediators
        # A mediator receives from [inputs, mediators]; the output module from [inputs,
        # mediators, itself] or, without readout_inputs, [mediators, itself].
        hears = torch.softmax(log_k[n : n + m, : n + m], dim=-1)[:, n:]  # [u, v], u <- v
        first = 0 if self.readout_inputs else n
        direct = torch.softmax(log_k[-1, first:], dim=-1)[n - first : n - first + m]
        return direct, direct @ hears

    def kept_mediators(self, log_kernel: torch.Tensor | None = None) -> torch.Tensor:
        """Indices (ascending) of the mediators that run in eval mode: ranked by the direct
        share of the output's kernel prior, ties (mediators the output does not hear) broken
        by the two-hop share, then by index."""
        direct, two_hop = self.mediator_importance(log_kernel)
        order = torch.sort(two_hop, descending=True, stable=True).indices
        order = order[torch.sort(direct[order], descending=True, stable=True).indices]
        return order[: self.kept_count()].sort().values

    def _constants(self, drop: bool) -> dict[str, Any]:
        """Everything that depends on the weights only, for the mediators that run (all of them
        unless `drop`): initial states, the ModFC code scales and the kernel slices used. In
        eval mode (`drop`) the ModFCs' transposed weights too (see `apply_modfc`)."""
        n, m = self.num_inputs, self.num_mediators
        log_k = self.log_kernel()
        kept = self.kept_mediators(log_k) if drop else torch.arange(m, device=log_k.device)
        out = n + m
        inputs = torch.arange(n, device=log_k.device)
        mediators = n + kept
        senders = torch.cat([inputs, mediators])
        readout_senders = torch.cat([senders if self.readout_inputs else mediators,
                                     torch.tensor([out], device=log_k.device)])
        # eval constants need no graph; detached, no module sees a tensor that wants one (a FLOP
        # counter's module tracker hooks the gradient of every such input, which fails here)
        codes = self.codes.detach() if drop else self.codes
        states = self.seed(codes)
        med_codes, send_codes = codes[mediators], codes[senders]
        prop_kernel = log_k[mediators][:, senders]
        return {
            "kept": kept,
            "init_inputs": states[:n], "init_mediators": states[mediators],
            "init_output": states[out:],
            "read_in": self.read_in.constants(codes[:n], drop),
            "layers": [layer.constants(med_codes, send_codes, drop) for layer in self.layers],
            "prop_kernel": prop_kernel,
            "read_out": self.read_out.constants(codes[out:], codes[readout_senders], drop),
            "out_kernel": log_k[out:][:, readout_senders],
        }

    def _eval_constants(self) -> dict[str, Any]:
        """`_constants(drop=True)` per weight version and knob setting, charged to no sample."""
        return eval_constants(self, self._constant_sources, lambda: self._constants(drop=True),
                              extra=(self.keep_ratio, self.tau), uncounted=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.training:
            c = self._constants(drop=False)
        else:
            c = self._eval_constants()
            self._eval_batches += 1
        b = tokens.shape[0]
        # One sample in eval mode runs on its states [modules, dim] with no batch dimension:
        # no expands and no views around every matmul, whose fixed costs dominate at batch 1.
        one = b == 1 and not self.training
        if one:
            tokens = tokens[0]

        def initial(states: torch.Tensor) -> torch.Tensor:
            return states if one else states.expand(b, -1, -1)

        inputs = self.read_in(initial(c["init_inputs"]), tokens, c["read_in"])
        mediators = initial(c["init_mediators"])
        for layer, scales in zip(self.layers, c["layers"]):
            mediators = layer(inputs, mediators, scales, c["prop_kernel"])
        output = self.read_out(initial(c["init_output"]),
                               inputs if self.readout_inputs else None, mediators,
                               c["read_out"], c["out_kernel"])
        return output if one else output[:, 0]

    def kernel_sparsity(self) -> float:
        """Share of ordered pairs (receiver u != sender v) of the full propagation kernel
        (mediator receivers; input and mediator senders) truncated to 0."""
        n, m = self.num_inputs, self.num_mediators
        with torch.no_grad():
            rows = self.log_kernel()[n : n + m, : n + m]
            cut = torch.isinf(rows).sum().item()
        return cut / (m * (n + m - 1))

    def routing_stats(self) -> dict[str, float]:
        """`kernel_sparsity` (see the method), `active_mediators` (mediators running at
        inference) and `kernel_mean_degree` (mean count of senders a running mediator is linked
        to, itself included, among the running modules). Empty until an eval forward pass."""
        if not self._eval_batches:
            return {}
        c = self._eval_constants()
        return {
            "kernel_sparsity": self.kernel_sparsity(),
            "active_mediators": float(c["kept"].numel()),
            "kernel_mean_degree": float(torch.isfinite(c["prop_kernel"]).sum(-1).double().mean()),
        }

    def reset_stats(self) -> None:
        self._eval_batches = 0

    def stats_state(self) -> dict[str, torch.Tensor]:
        # the statistics derive from the weights; the count only says whether any batch ran
        return {"eval_batches": torch.tensor(self._eval_batches, dtype=torch.int64)}

    def load_stats_state(self, state: dict[str, torch.Tensor]) -> None:
        self._eval_batches = int(state["eval_batches"])

    def inference_knobs(self) -> dict[str, float]:
        return {"keep_ratio": self.keep_ratio}

    def set_inference_knobs(self, keep_ratio: float | None = None, **rest: float) -> None:
        super().set_inference_knobs(**rest)
        if keep_ratio is not None:
            self.keep_ratio = _check_ratio(keep_ratio)


def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"keep_ratio must lie in (0, 1], got {ratio}")
    return ratio
