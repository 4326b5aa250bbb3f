"""AdaTape: per-sample tape lengths, exact per-sample FLOPs, the theta knob and the ponder loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from flop_checks import assert_matches_alone
from torch import nn

from condsearch.blocks import (
    inference_knobs,
    reset_routing_stats,
    routing_stats,
    set_inference_knobs,
    total_aux_loss,
)
from condsearch.blocks.adatape import AdaTape
from condsearch.cost import per_sample_flops
from condsearch.models._layers import ClassHead, TransformerLayer

DIM, SEQ, VOCAB = 16, 12, 3


class OneHotBank(nn.Module):
    """Input-driven bank as in AdaTape's parity setup: one bank token per input position."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(VOCAB, DIM)
        self.pos = nn.Parameter(torch.zeros(SEQ, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.one_hot(x, VOCAB).float()) + self.pos


class TapeNet(nn.Module):
    """Parity-style model: token embedding + CLS, one layer, then AdaTape (one layer + head)."""

    def __init__(self, bank: str, max_tape: int, k: int, theta: float = 1.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.cls = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos = nn.Parameter(torch.zeros(SEQ + 1, DIM))
        self.pre = TransformerLayer(DIM, 4, 2.0)
        self.tape = AdaTape(
            DIM, [TransformerLayer(DIM, 4, 2.0)], ClassHead(DIM, 2), bank=bank, bank_size=24,
            bank_embed=OneHotBank() if bank == "input" else None, max_tape=max_tape,
            tokens_per_step=k, theta=theta,
        )

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.cls.expand(x.shape[0], -1, -1)
        return self.pre(torch.cat([cls, self.embed(x)], dim=1) + self.pos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tape(self.tokens(x), x)

    def lengths(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.tape.read_tape(self.tokens(x), x)[1]


def random_model(bank: str, max_tape: int, k: int, seed: int) -> TapeNet:
    """Random but decisive weights, so the ATR's halting mass differs from sample to sample."""
    torch.manual_seed(seed)
    model = TapeNet(bank, max_tape, k)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    model.tape.norm.weight.data.fill_(3.0)  # sharper scores: top weights spread over (1/k, 1)
    model.cls.data.zero_()  # the CLS query then comes from the input alone
    model.pos.data[0].zero_()
    return model.eval()


def inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(seed))


def spread_theta(model: TapeNet, x: torch.Tensor) -> float:
    """The budget on a 0.25 grid whose tape lengths are most spread out (highest entropy)."""
    def entropy(theta: float) -> float:
        model.tape.theta = theta
        p = torch.bincount(model.lengths(x)).float()
        p = p[p > 0] / p.sum()
        return float(-(p * p.log()).sum())

    grid = [0.25 * i for i in range(1, 4 * model.tape.max_tape + 1)]
    best = max(grid, key=entropy)
    model.tape.theta = best
    return best


@pytest.mark.parametrize(
    "bank,max_tape,k,seed",
    [("learned", 4, 3, 0), ("learned", 6, 2, 1), ("input", 6, 2, 2), ("input", 4, 3, 3)],
)
def test_samples_match_flop_counter_alone(bank, max_tape, k, seed):
    model = random_model(bank, max_tape, k, seed)
    x = inputs(100, seed)
    spread_theta(model, x)
    lengths = model.lengths(x)
    assert len(lengths.unique()) >= 2, f"tape lengths should differ: {lengths.tolist()}"

    out, flops = assert_matches_alone(model, x)
    # Samples with the same tape length cost the same; a longer tape costs more.
    per_length = {int(n): flops[lengths == n].unique() for n in lengths.unique()}
    assert all(v.numel() == 1 for v in per_length.values())
    costs = [float(per_length[n]) for n in sorted(per_length)]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)
    for i in range(0, 100, 11):  # a sample's output does not depend on its batch-mates
        with torch.no_grad():
            torch.testing.assert_close(model(x[i : i + 1]), out[i : i + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bank", ["learned", "input"])
def test_larger_theta_reads_more_and_costs_more(bank):
    model = random_model(bank, 6, 2, seed=4)
    x = inputs(48, 4)
    assert inference_knobs(model) == {"adatape.theta": 1.0}
    set_inference_knobs(model, {"adatape.theta": 1.5})
    short, cheap = model.lengths(x), per_sample_flops(model, x)[1]
    reset_routing_stats(model)
    set_inference_knobs(model, {"adatape.theta": 3.5})
    assert model.tape.theta == 3.5
    long, dear = model.lengths(x), per_sample_flops(model, x)[1]
    assert (long >= short).all() and long.float().mean() > short.float().mean()
    assert (dear >= cheap).all() and dear.mean() > cheap.mean()
    stats = routing_stats(model)
    assert stats["adatape.tape_length_mean"] == pytest.approx(long.float().mean().item())
    assert stats["adatape.tape_length_var"] == pytest.approx(long.float().var(unbiased=False).item())
    assert sum(stats[f"adatape.tape_length.{n}"] for n in range(1, 7)) == pytest.approx(1.0)
    with pytest.raises(KeyError):
        set_inference_knobs(model, {"adatape.max_tape": 2.0})


@pytest.mark.parametrize("bank", ["learned", "input"])
def test_training_exposes_a_ponder_loss_with_gradients(bank):
    torch.manual_seed(5)
    model = TapeNet(bank, max_tape=4, k=2, theta=2.0)
    x, y = inputs(16, 5), torch.randint(0, 2, (16,))
    model.train()
    logits = model(x)
    assert logits.shape == (16, 2)
    ponder = total_aux_loss(model, y)
    assert ponder is not None and torch.isfinite(ponder)
    # Each step adds 1 - sum(w^2), which lies in (0, 1 - 1/k]; at most max_tape steps.
    assert 0 < ponder.item() <= 0.01 * 4 * (1 - 1 / 2)
    ponder.backward()
    tape = model.tape
    grads = [tape.norm.weight, tape.key_proj.weight, model.embed.weight]
    grads.append(tape.bank if bank == "learned" else tape.bank_embed.proj.weight)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in grads)
    F.cross_entropy(model(x), y).backward()  # the task loss reaches the tape tokens too
    assert tape.tape_pos.grad.abs().sum() > 0
    assert routing_stats(model) == {}  # training forwards record no statistics
    model.eval()
    model(x)
    assert tape.aux_loss(y) is None
    assert routing_stats(model)["adatape.tape_length_mean"] >= 2  # theta 2 needs >= 2 steps


def test_a_bank_too_small_for_the_tape_is_refused():
    head = ClassHead(DIM, 2)
    with pytest.raises(ValueError, match=r"7 entries.*\(4\).*\(2\) = 8 distinct"):
        AdaTape(DIM, [], head, bank_size=7, max_tape=4, tokens_per_step=2)
    AdaTape(DIM, [], head, bank_size=8, max_tape=4, tokens_per_step=2)
    model = TapeNet("input", max_tape=5, k=3)  # the input bank has SEQ = 12 < 15 entries
    with pytest.raises(ValueError, match="12 entries"):
        model(inputs(2, 0))
    with pytest.raises(ValueError, match="bank_embed"):
        AdaTape(DIM, [], head, bank="input")


@pytest.mark.parametrize("bank,k", [("learned", 1), ("learned", 3), ("input", 2)])
def test_each_sample_reads_1_to_max_tape_distinct_entries(bank, k):
    model = random_model(bank, 4, k, seed=6)
    x = inputs(32, 6)
    tape = model.tape
    for theta, expect in [(0.01, {1}), (4.5, {4}), (1.5, None)]:
        tape.theta = theta
        with torch.no_grad():
            h = model.tokens(x)
            merged, lengths, indices = tape.read_tape(h, x)
            rows = tape.bank if bank == "learned" else tape.bank_embed(x)
        assert ((lengths >= 1) & (lengths <= 4)).all()
        if expect is not None:
            assert set(lengths.tolist()) == expect
        for i, n in enumerate(lengths.tolist()):
            read = indices[i, :n].flatten()
            assert (read >= 0).all() and read.unique().numel() == n * k  # never read twice
            assert (indices[i, n:] == -1).all() and (merged[i, n:] == 0).all()
            if k == 1:  # one candidate per step: the tape token is that bank row
                bank_rows = rows if rows.dim() == 2 else rows[i]
                torch.testing.assert_close(merged[i, :n], bank_rows[read])
    assert math.isclose(tape.inference_knobs()["theta"], 1.5)
