"""A module computing on a sub-batch outside any `owners` scope is named in a warning, once."""

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import pytest
import torch
import torch.nn.functional as F
from flop_checks import alone
from torch import nn

from condsearch.cost import UnattributedCostWarning, owners, per_sample_flops

CHOSEN = [0, 2, 3]  # the samples of a batch of 5 that `Refine` works on


class Refine(nn.Module):
    """A user's block: runs `op` on the samples whose first feature is positive, the others pass
    through; `declare` says whether it wraps that sub-batch in `owners`."""

    def __init__(self, op: Callable[[torch.Tensor], torch.Tensor], declare: bool) -> None:
        super().__init__()
        self.op, self.declare = op, declare

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = (x.flatten(1)[:, 0] > 0).nonzero().flatten()
        out = x.clone()
        with owners(idx) if self.declare else nullcontext():
            out[idx] = self.op(x[idx])  # the line the warning points at
        return out


class Net(nn.Module):
    """A model with the user's block inside it, under the qualified name `body.refine`."""

    def __init__(self, op: Callable[[torch.Tensor], torch.Tensor], declare: bool) -> None:
        super().__init__()
        self.body = nn.Module()
        self.body.refine = Refine(op, declare)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.refine(x).mean((2, 3)))


def batch(n: int = 5, chosen: list[int] = CHOSEN) -> torch.Tensor:
    """[n, 4, 2, 2] inputs whose first feature is positive exactly at the `chosen` samples."""
    x = torch.randn(n, 4, 2, 2, generator=torch.Generator().manual_seed(0)).abs()
    sign = torch.full((n,), -1.0)
    sign[chosen] = 1.0
    x[:, 0, 0, 0] *= sign
    return x


def _attention(z: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(z, z, z)


def _batched_matmul(z: torch.Tensor) -> torch.Tensor:
    return torch.bmm(z.flatten(0, 1), z.flatten(0, 1).transpose(1, 2)).view_as(z)


OPS = {  # op family: (make the op on [k, 4, 2, 2], rows it runs on for k = 3 of 5 samples)
    "matmul": (lambda: nn.Linear(2, 2), 3 * 4 * 2),
    "batched matmul": (lambda: _batched_matmul, 3 * 4),
    "convolution": (lambda: nn.Conv2d(4, 4, 1), 3),
    "attention": (lambda: _attention, 3),
}


@contextmanager
def fails_if_unattributed() -> Iterator[None]:
    """A scope in which an UnattributedCostWarning raises, so any false alarm fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnattributedCostWarning)
        yield


@pytest.mark.parametrize("family", OPS)
def test_an_undeclared_sub_batch_warns_once_naming_the_users_module(family):
    make, rows = OPS[family]
    model = Net(make(), declare=False)

    with pytest.warns(UnattributedCostWarning) as caught:
        per_sample_flops(model, batch())

    assert len(caught) == 1
    message = str(caught[0].message)
    expected = f"body.refine (Refine) ran a {family} on {rows} rows of a batch of 5 "
    assert message.startswith(expected)
    assert "spread evenly" in message and "with owners(rows)" in message
    assert caught[0].filename == __file__  # it points at the op's line in Refine.forward
    with fails_if_unattributed():
        per_sample_flops(model, batch())  # the same model and module: no second warning


def test_each_model_counted_warns_for_its_own_module():
    first, second = Net(nn.Linear(2, 2), declare=False), Net(nn.Linear(2, 2), declare=False)
    with pytest.warns(UnattributedCostWarning):
        per_sample_flops(first, batch())
    with pytest.warns(UnattributedCostWarning, match=r"^body\.refine \(Refine\)"):
        per_sample_flops(second, batch())


@pytest.mark.parametrize("family", OPS)
def test_a_declared_sub_batch_is_silent_and_charged_to_its_samples(family):
    model = Net(OPS[family][0](), declare=True)
    x = batch()

    with fails_if_unattributed():
        _, flops = per_sample_flops(model, x)

    torch.testing.assert_close(flops, alone(model, x), rtol=0, atol=1e-6)
    others = [i for i in range(5) if i not in CHOSEN]
    assert flops[CHOSEN].min() > flops[others].max()


class Dense(nn.Module):
    """Convolution, token reshapes to B*T rows, attention and batched matmuls on every sample."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(1, dim, 2, stride=2)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mlp = nn.Linear(dim, dim, bias=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2)  # [B, T, D]
        b, t, d = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = h + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        h = h + self.mlp(h.reshape(b * t, d)).view(b, t, d)  # B*T rows
        h = torch.bmm(torch.bmm(h, h.transpose(1, 2)).softmax(-1), h)
        return self.head(h.mean(1))


@pytest.mark.parametrize("n", [1, 3, 7])
def test_a_dense_model_is_silent(n):
    model = Dense().eval()
    x = torch.randn(n, 1, 6, 6)  # 9 tokens per sample

    with fails_if_unattributed():
        _, flops = per_sample_flops(model, x)

    torch.testing.assert_close(flops, alone(model, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", OPS)
def test_batch_size_one_never_warns(family):
    model = Net(OPS[family][0](), declare=False)

    with fails_if_unattributed():
        per_sample_flops(model, batch(1, chosen=[0]))
        per_sample_flops(model, batch(1, chosen=[]))
