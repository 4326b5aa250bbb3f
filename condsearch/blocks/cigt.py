"""CIGT (Bicici et al., arXiv 2402.08345): a trellis of blocks, one block per layer per sample.

A Conditional Information Gain Trellis is a sequence of layers; layer l holds `widths[l]`
interchangeable blocks. A router after layer l - 1 reads that layer's output and picks which
block of layer l a sample runs: p(n|x) = softmax(a(x) / T), hard route = argmax. Only the rows
routed to a block are gathered and run through it; the results are scattered back, so a sample
pays for one block per layer (plus the routers, which run on every sample). The blocks of the
last layer are leaves, each ending in its own classifier.

At inference the cost of routing is kept to the router itself: where every row of a batch takes
the same route (always so at batch size 1) the chosen block runs on the batch as it is, with no
gather or scatter, and one sample's route is read from its logits on the host. In eval mode
with no gradient a router's BatchNorm is folded into its first Linear once per weight version
(`eval_constants`).

Routers learn from the information-gain loss alone (the hard routes carry no gradient), computed
on each minibatch from the soft probabilities:

    p(c, n) = mean_x 1[y_x = c] p(n|x),  p(n) = sum_c p(c, n),  p(c) = sum_n p(c, n)
    IG = balance * H(p(n)) + H(p(c)) - H(p(c, n)),     aux_loss = -ig_weight * sum_routers IG

With balance 1, IG is the mutual information between route and class. Training routes at random
for `warmup_epochs`, then routes a `random_routing` fraction of each batch at random and the
rest by argmax. At inference a sample may also run every other block whose p(n|x) exceeds
`multipath_threshold`; its output is then the probability-weighted mean of the blocks it ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks._eval_constants import CachesEvalConstants, eval_constants, fold_batchnorm
from condsearch.blocks._protocol import AdaptiveBlock
from condsearch.cost import owners


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of a distribution given as a tensor of probabilities (any shape)."""
    return -(p * p.clamp_min(1e-12).log()).sum()


def information_gain(probs: torch.Tensor, targets: torch.Tensor, num_classes: int,
                     balance: float = 1.0) -> torch.Tensor:
    """balance * H(p(n)) + H(p(c)) - H(p(c, n)) of soft routes `probs` [B, N] and labels [B]."""
    probs = probs.float()
    with torch.autocast(probs.device.type, enabled=False):
        onehot = F.one_hot(targets, num_classes).to(probs.dtype)
        joint = onehot.T @ probs / probs.shape[0]  # p(c, n)
        return balance * entropy(joint.sum(0)) + entropy(joint.sum(1)) - entropy(joint)


def mutual_information(counts: torch.Tensor) -> float:
    """I(row variable; column variable) in nats of a table of co-occurrence counts."""
    total = float(counts.sum())
    if total == 0:
        return 0.0
    joint = counts.double() / total
    return float(entropy(joint.sum(0)) + entropy(joint.sum(1)) - entropy(joint))


class CIGTRouter(CachesEvalConstants):
    """Pooled features -> Linear(dim) -> BatchNorm1d -> ReLU -> Linear(routes): routing logits.

    Image features [B, C, H, W] are average-pooled to `pool_side` x `pool_side` first; any other
    features are flattened as they are, so `in_features` is C * pool_side**2 for images.
    """

    def __init__(self, in_features: int, routes: int, dim: int = 64, pool_side: int = 4) -> None:
        super().__init__()
        if routes < 2:
            raise ValueError(f"a router chooses among 2 or more blocks, got {routes}")
        self.pool_side = int(pool_side)
        self.fc1 = nn.Linear(in_features, dim)
        self.norm = nn.BatchNorm1d(dim)
        self.fc2 = nn.Linear(dim, routes)

    @property
    def routes(self) -> int:
        return self.fc2.out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 4:
            h = F.adaptive_avg_pool2d(h, self.pool_side)
        if not self.training and not torch.is_grad_enabled():
            w1, b1, w2, b2 = self._folded()
            return torch.addmm(b2, torch.addmm(b1, h.flatten(1), w1).relu_(), w2)
        z = self.fc1(h.flatten(1))
        if self.training and z.shape[0] == 1:  # batch statistics of one sample are undefined
            norm = self.norm
            z = F.batch_norm(z, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                             False, 0.0, norm.eps)
        else:
            z = self.norm(z)
        return self.fc2(F.relu(z))

    def _folded(self) -> tuple[torch.Tensor, ...]:
        """(W1^T, b1, W2^T, b2) for eval mode: fc1 with the BatchNorm after it folded in, and
        both weights transposed once for `addmm`."""
        modules = self._modules
        fc1, fc2, norm = modules["fc1"], modules["fc2"], modules["norm"]

        def build() -> tuple[torch.Tensor, ...]:
            w1, b1 = fold_batchnorm(fc1, norm)
            return w1.T.contiguous(), b1, fc2.weight.T.contiguous(), fc2.bias.clone()

        return eval_constants(self, (fc1, fc2, norm), build)


def _argmax(values: list[float]) -> int:
    """`torch.argmax` of a list: the first NaN if any, else the first largest value."""
    best = 0
    for i, v in enumerate(values):
        if v != v:
            return i
        if v > values[best]:
            best = i
    return best


class CIGTTrellis(AdaptiveBlock):
    """Layers of interchangeable blocks; routers pick one block per layer for each sample.

    `layers[l]` lists the blocks of layer l (layer 0 has exactly one). `routers[l]` (keyed by the
    layer it routes into) is required for every layer with two or more blocks and maps the
    previous layer's output to one logit per block. Every block of a layer must map the same
    input to outputs of the same shape; the last layer's blocks return class logits.

    Routing statistics (eval mode, since `reset_stats`), for each routed layer l:
    `path_usage.layer{l}.block{n}` (fraction of samples that ran block n), `mean_paths.layer{l}`
    (blocks run per sample) and `route_class_mi.layer{l}` (mutual information in nats between
    the argmax route and the labels told to `observe_targets`).
    """

    knob_prefix = "cigt"

    def __init__(self, layers: Sequence[Sequence[nn.Module]], routers: Mapping[int, nn.Module],
                 num_classes: int, *, ig_weight: float = 1.0, balance: float = 1.0,
                 temperature: float = 25.0, temperature_decay: float = 0.9999,
                 temperature_min: float = 0.1, warmup_epochs: float = 1,
                 random_routing: float = 0.5, multipath_threshold: float = 1.0) -> None:
        super().__init__()
        widths = [len(blocks) for blocks in layers]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"a trellis needs 2 or more layers of 1 or more blocks, got {widths}")
        if widths[0] != 1:
            raise ValueError(f"the first trellis layer has no router, so it holds one block; "
                             f"got widths {widths}")
        routed = {layer for layer, width in enumerate(widths) if width > 1}
        given = {int(layer) for layer in routers}
        if given != routed:
            raise ValueError(f"routers are needed for exactly the layers with several blocks "
                             f"{sorted(routed)} (widths {widths}); got routers for {sorted(given)}")
        if not 0.0 <= random_routing <= 1.0:
            raise ValueError(f"random_routing is a fraction in [0, 1], got {random_routing}")
        if not 0.0 < temperature_min <= temperature or not 0.0 < temperature_decay <= 1.0:
            raise ValueError("need 0 < temperature_min <= temperature and 0 < temperature_decay "
                             f"<= 1, got {temperature_min}, {temperature}, {temperature_decay}")
        self.widths = widths
        self.num_classes = int(num_classes)
        self.layers = nn.ModuleList(nn.ModuleList(blocks) for blocks in layers)
        self.routers = nn.ModuleDict({str(layer): routers[layer] for layer in sorted(routed)})
        self.ig_weight = float(ig_weight)
        self.balance = float(balance)
        self.temperature0 = float(temperature)
        self.temperature_decay = float(temperature_decay)
        self.temperature_min = float(temperature_min)
        self.warmup_epochs = float(warmup_epochs)
        self.random_routing = float(random_routing)
        self.multipath_threshold = float(multipath_threshold)
        self.steps_per_epoch = 0  # unknown until training_progress: no warm-up before that
        # The optimizer step the temperature follows; saved with the weights (inference uses T).
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._train_probs: dict[int, torch.Tensor] = {}
        self._last_routes: dict[int, torch.Tensor | int] = {}  # an int: a batch of one
        # blocks run per layer and samples seen (eval mode): host counts, read once per batch
        self._usage = {layer: [0] * widths[layer] for layer in sorted(routed)}
        self._samples = 0
        for layer in sorted(routed):
            self.register_buffer(f"_class_route{layer}",
                                 torch.zeros(self.num_classes, widths[layer]), persistent=False)

    @property
    def routed_layers(self) -> list[int]:
        return [int(layer) for layer in self.routers]

    @property
    def temperature(self) -> float:
        """T = max(T0 * decay**step, T_min)."""
        decayed = self.temperature0 * math.exp(int(self.step) * math.log(self.temperature_decay))
        return max(decayed, self.temperature_min)

    def in_warmup(self) -> bool:
        return int(self.step) < self.warmup_epochs * self.steps_per_epoch

    def route_probabilities(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """p(n|x) [B, widths[layer]] of the router into `layer`, given the previous layer's output."""
        return (self._route_logits(layer, h) / self.temperature).softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._train_probs = {}
        else:
            self._last_routes = {}
            self._samples += x.shape[0]
        h = x
        for layer, blocks in enumerate(self.layers):
            if len(blocks) == 1:
                h = blocks[0](h)
                continue
            if self.training:
                probs = self.route_probabilities(layer, h)
                self._train_probs[layer] = probs
                h, _ = self._run_routes(blocks, h, self._training_routes(probs))
                continue
            if self.multipath_threshold >= 1.0:
                # no p(n|x) exceeds 1, so each sample runs its argmax block alone; the argmax
                # of softmax(a / T) is that of the logits a, so no softmax is needed
                logits = self._route_logits(layer, h)
                if h.shape[0] == 1:  # one sample: one host read of its logits, no index ops
                    chosen = _argmax(logits.tolist()[0])
                    self._last_routes[layer] = chosen
                    self._usage[layer][chosen] += 1
                    h = blocks[chosen](h)
                    continue
                top = logits.argmax(-1)
                self._last_routes[layer] = top
                h, counts = self._run_routes(blocks, h, top)
            else:
                probs = self.route_probabilities(layer, h)
                top = probs.argmax(-1)
                run = probs > self.multipath_threshold
                run[torch.arange(run.shape[0], device=run.device), top] = True
                self._last_routes[layer] = top
                kept = probs * run
                h = self._run_blocks(blocks, h, run, kept / kept.sum(-1, keepdim=True))
                counts = run.sum(0).tolist()
            usage = self._usage[layer]
            for n, count in enumerate(counts):
                usage[n] += count
        return h

    def _route_logits(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        logits = self.routers[str(layer)](h)
        if logits.dtype != torch.float32:
            logits = logits.float()
        if logits.shape[-1] != self.widths[layer]:
            raise ValueError(f"router into layer {layer} gave {logits.shape[-1]} logits for "
                             f"{self.widths[layer]} blocks")
        return logits

    def _training_routes(self, probs: torch.Tensor) -> torch.Tensor:
        """Argmax routes, except random ones for the whole batch in warm-up and for a
        `random_routing` fraction of it afterwards."""
        batch, width = probs.shape
        device = probs.device
        if self.in_warmup():
            return torch.randint(width, (batch,), device=device)
        routes = probs.detach().argmax(-1)
        count = round(self.random_routing * batch)
        if count:
            chosen = torch.randperm(batch, device=device)[:count]
            routes[chosen] = torch.randint(width, (count,), device=device)
        return routes

    @staticmethod
    def _run_routes(blocks: nn.ModuleList, h: torch.Tensor,
                    routes: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Run block routes[i] on row i, each block on its own rows only; also return how many
        rows each block ran. Where one block takes every row, it runs on the batch as it is."""
        batch = h.shape[0]
        if batch == 1:
            chosen = int(routes)
            counts = [0] * len(blocks)
            counts[chosen] = 1
            return blocks[chosen](h), counts
        counts = torch.bincount(routes, minlength=len(blocks)).tolist()
        if batch in counts:
            return blocks[counts.index(batch)](h), counts
        order = routes.argsort(stable=True)
        out: torch.Tensor | None = None
        for block, rows in zip(blocks, order.split(counts), strict=True):
            if rows.numel() == 0:
                continue
            with owners(rows):
                y = block(h.index_select(0, rows))
            if out is None:
                out = y.new_empty((batch, *y.shape[1:]))
            out.index_copy_(0, rows, y)
        assert out is not None
        return out, counts

    @staticmethod
    def _run_blocks(blocks: nn.ModuleList, h: torch.Tensor, run: torch.Tensor,
                    weights: torch.Tensor) -> torch.Tensor:
        """Run block n on the rows with run[:, n] only; sum the outputs weighted by `weights`."""
        out: torch.Tensor | None = None
        for n, block in enumerate(blocks):
            rows = run[:, n].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            with owners(rows):
                y = block(h.index_select(0, rows))
            if out is None:
                out = y.new_zeros((h.shape[0], *y.shape[1:]))
            w = weights.index_select(0, rows)[:, n].to(y.dtype)
            out.index_add_(0, rows, y * w.view(-1, *[1] * (y.dim() - 1)))
        assert out is not None  # every row runs at least one block
        return out

    def aux_loss(self, targets: torch.Tensor) -> torch.Tensor | None:
        if not self.training or not self._train_probs:
            return None
        gains = [information_gain(p, targets, self.num_classes, self.balance)
                 for p in self._train_probs.values()]
        return -self.ig_weight * torch.stack(gains).sum()

    def training_progress(self, step: int, steps_per_epoch: int) -> None:
        self.step.fill_(int(step))
        self.steps_per_epoch = int(steps_per_epoch)

    def observe_targets(self, targets: torch.Tensor) -> None:
        for layer, routes in self._last_routes.items():
            if isinstance(routes, int):
                routes = torch.tensor([routes], device=targets.device)
            if routes.shape[0] != targets.shape[0]:
                raise ValueError(f"{targets.shape[0]} labels for a batch of {routes.shape[0]}")
            table = getattr(self, f"_class_route{layer}")
            table.index_put_((targets.to(table.device), routes),
                             torch.ones_like(routes, dtype=table.dtype), accumulate=True)
        self._last_routes = {}

    def routing_stats(self) -> dict[str, float]:
        samples = self._samples
        if samples == 0 or not self.routers:
            return {}
        stats: dict[str, float] = {}
        for layer in self.routed_layers:
            usage = [count / samples for count in self._usage[layer]]
            for n, u in enumerate(usage):
                stats[f"path_usage.layer{layer}.block{n}"] = u
            stats[f"mean_paths.layer{layer}"] = sum(usage)
            table = getattr(self, f"_class_route{layer}")
            if table.sum() > 0:
                stats[f"route_class_mi.layer{layer}"] = mutual_information(table)
        return stats

    def reset_stats(self) -> None:
        self._samples = 0
        for layer in self.routed_layers:
            self._usage[layer] = [0] * self.widths[layer]
            getattr(self, f"_class_route{layer}").zero_()
        self._last_routes = {}

    def stats_state(self) -> dict[str, torch.Tensor]:
        # counts only: the mutual information is computed from the summed class-route tables
        state = {"samples": torch.tensor(self._samples, dtype=torch.int64)}
        for layer in self.routed_layers:
            state[f"usage{layer}"] = torch.tensor(self._usage[layer], dtype=torch.int64)
            state[f"class_route{layer}"] = getattr(self, f"_class_route{layer}").clone()
        return state

    def load_stats_state(self, state: dict[str, torch.Tensor]) -> None:
        self._samples = int(state["samples"])
        for layer in self.routed_layers:
            self._usage[layer] = [int(v) for v in state[f"usage{layer}"].tolist()]
            getattr(self, f"_class_route{layer}").copy_(state[f"class_route{layer}"])

    def inference_knobs(self) -> dict[str, float]:
        return {"multipath_threshold": self.multipath_threshold}

    def set_inference_knobs(self, multipath_threshold: float | None = None, **rest: float) -> None:
        super().set_inference_knobs(**rest)
        if multipath_threshold is not None:
            self.multipath_threshold = float(multipath_threshold)
