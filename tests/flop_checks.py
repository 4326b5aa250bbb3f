"""The yardstick every per-sample FLOPs test shares: PyTorch's counter on each sample alone."""

import pytest
import torch

from condsearch.cost import per_sample_flops, reference_counter


def alone(model, x: torch.Tensor) -> torch.Tensor:
    """FLOPs FlopCounterMode counts for each sample run on its own (batch size 1)."""
    counts = []
    for i in range(x.shape[0]):
        with reference_counter() as counter, torch.no_grad():
            model(x[i : i + 1])
        counts.append(counter.get_total_flops())
    return torch.tensor(counts, dtype=torch.float64)


def assert_matches_alone(model, x: torch.Tensor):
    """≥ 99% of samples within 1% of their count alone, and the sum equal to the batched count.

    Returns (output, per-sample FLOPs) of the counted batched pass."""
    out, flops = per_sample_flops(model, x)
    reference = alone(model, x)
    close = (flops - reference).abs() <= 0.01 * reference
    assert close.float().mean() >= 0.99, f"mismatch at {(~close).nonzero().flatten().tolist()}"
    with reference_counter() as counter, torch.no_grad():
        model(x)
    assert flops.sum().item() == pytest.approx(counter.get_total_flops(), rel=1e-9)
    return out, flops
