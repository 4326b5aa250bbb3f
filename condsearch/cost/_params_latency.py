"""Parameter count and batch-1 latency."""

from __future__ import annotations

import statistics
import time

import torch


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters the model stores (all of them, used on every input or not)."""
    return sum(p.numel() for p in model.parameters())


def batch1_latency_ms(
    model: torch.nn.Module, inputs: torch.Tensor, samples: int = 32, warmup: int = 3
) -> float:
    """Median wall time in ms of a batch-1 forward pass, over up to `samples` distinct inputs.

    Adaptive models cost different time on different inputs, so each timing uses another sample.
    """
    model.eval()
    n = min(samples, inputs.shape[0])
    cuda = inputs.is_cuda
    times = []
    with torch.inference_mode():
        for i in range(warmup):
            model(inputs[i % n : i % n + 1])
        for i in range(n):
            x = inputs[i : i + 1]
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
