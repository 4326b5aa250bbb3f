"""per_sample_flops: each sample's FLOPs equal what FlopCounterMode counts for it alone."""

import pytest
import torch
from flop_checks import alone
from helpers import DIGITS_IO, SEQUENCE_IO
from torch import nn

from condsearch.blocks.early_exit import certainty
from condsearch.cost import count_params, owners, per_sample_flops, reference_counter
from condsearch.models import build_model


def early_exit_model(io, positions, criterion, seed):
    """An early-exit transformer whose first exit stops about half of the samples."""
    torch.manual_seed(seed)
    exit_cfg = {"enabled": True, "positions": positions, "criterion": criterion, "threshold": 0.5}
    arch = {"model": {"backbone": "token_transformer", "dim": 32, "depth": 5, "heads": 4,
                      "patch_size": 2, "components": {"early_exit": exit_cfg}}}
    model = build_model(arch, io)
    for p in model.parameters():
        p.data.normal_(0, 0.3)  # random but decisive heads, so certainties spread out
    return model


def random_inputs(io, n, seed):
    g = torch.Generator().manual_seed(seed)
    if io["input_kind"] == "image":
        return torch.randn(n, *io["input_shape"], generator=g)
    return torch.randint(0, io["vocab_size"], (n, *io["input_shape"]), generator=g)


def split_threshold(model, x, criterion):
    """A threshold between the first exit's certainties, so some samples stop and some go on."""
    model.train()
    with torch.no_grad():
        model(x)
    first = certainty(model.trunk._train_exit_logits[0], criterion).sort().values
    model.eval()
    mid = first.numel() // 2
    return float(first[mid - 1] + first[mid]) / 2  # midway: no sample sits on the threshold


CONFIGS = [
    (DIGITS_IO, [1, 2, 3, 4], "confidence"),
    (DIGITS_IO, [2], "entropy"),
    (DIGITS_IO, [1, 3], "confidence"),
    (SEQUENCE_IO, [1, 2], "entropy"),
    (SEQUENCE_IO, [3], "confidence"),
]


@pytest.mark.parametrize("io,positions,criterion", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_early_exit_samples_match_flop_counter_alone(io, positions, criterion, seed):
    x = random_inputs(io, 100, seed)
    model = early_exit_model(io, positions, criterion, seed)
    model.trunk.threshold = split_threshold(model, x, criterion)

    out, flops = per_sample_flops(model, x)
    reference = alone(model, x)

    assert flops.shape == (100,)
    assert len(set(reference.tolist())) > 1, "the configuration should make samples exit at different depths"
    close = (flops - reference).abs() <= 0.01 * reference
    assert close.float().mean() >= 0.99, f"mismatch at samples {(~close).nonzero().flatten().tolist()}"


@pytest.mark.parametrize("io,positions,criterion", CONFIGS[:2])
def test_per_sample_flops_sum_to_the_batched_total(io, positions, criterion):
    x = random_inputs(io, 40, 3)
    model = early_exit_model(io, positions, criterion, 3)
    model.trunk.threshold = split_threshold(model, x, criterion)
    _, flops = per_sample_flops(model, x)
    with reference_counter() as counter, torch.no_grad():
        model(x)
    assert flops.sum().item() == pytest.approx(counter.get_total_flops(), rel=1e-9)


def test_counting_does_not_change_the_output():
    x = random_inputs(DIGITS_IO, 16, 4)
    model = early_exit_model(DIGITS_IO, [1, 2], "confidence", 4).eval()
    model.trunk.threshold = split_threshold(model, x, "confidence")
    with torch.no_grad():
        plain = model(x)
    counted, _ = per_sample_flops(model, x)
    torch.testing.assert_close(counted, plain, rtol=0, atol=0)


def test_exited_samples_are_not_computed_by_later_layers():
    """The batch costs less once samples exit: later layers really run on fewer rows."""
    x = random_inputs(DIGITS_IO, 32, 5)
    model = early_exit_model(DIGITS_IO, [1], "confidence", 5).eval()
    model.trunk.threshold = 2.0  # nobody is ever certain enough: all run every layer
    _, never = per_sample_flops(model, x)
    model.trunk.threshold = 0.0  # everybody leaves at layer 1
    _, always = per_sample_flops(model, x)
    assert (always < never / 2).all()


def test_a_static_model_matches_a_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    x = torch.randn(5, 3, 6, 6)
    _, flops = per_sample_flops(model, x)
    conv = 2 * (3 * 3 * 3) * 8 * 6 * 6  # 2 x MACs per output element x outputs
    linear = 2 * (8 * 6 * 6) * 10
    assert flops.tolist() == [conv + linear] * 5
    assert count_params(model) == (3 * 9 * 8 + 8) + (288 * 10 + 10)


def test_attention_is_counted_on_cpu():
    """PyTorch's own counter misses CPU scaled_dot_product_attention; ours does not."""
    q = torch.randn(2, 4, 7, 8)
    attention = lambda t: torch.nn.functional.scaled_dot_product_attention(t, t, t)  # noqa: E731
    _, flops = per_sample_flops(attention, q)
    # QK^T and AV: 2 matmuls of 7x8x7 multiply-adds per head, 4 heads, 2 FLOPs per multiply-add
    assert flops.tolist() == [2 * 2 * 4 * 7 * 8 * 7] * 2


def test_owner_scopes_split_work_by_rows_and_nest():
    """Ops inside `owners(rows)` are charged to those rows' samples, relative to the outer scope."""
    layer = nn.Linear(4, 4, bias=False)

    def routed(x):
        outer = torch.tensor([1, 2, 3])
        with owners(outer):
            sub = x[outer]
            with owners(torch.tensor([0, 0, 2])):  # rows 0,0,2 of `sub` = samples 1,1,3
                layer(sub[[0, 0, 2]])
        return x

    _, flops = per_sample_flops(routed, torch.randn(4, 4))
    per_row = 2 * 4 * 4
    assert flops.tolist() == [0, 2 * per_row, 0, per_row]
