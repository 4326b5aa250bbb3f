"""What a trial measures between epochs, cheaply: the objectives on a fixed, seeded subset of the
validation split, so results at the same epoch compare across trials (a multi-fidelity rung, a
Ray Tune report). Accuracy comes from the fit's own per-epoch evaluation of the whole split."""

from __future__ import annotations

from typing import Any

#: an interim measurement counts FLOPs on at most this many validation samples ...
INTERIM_SAMPLES = 256
#: ... chosen once by a permutation under this seed, the same samples for every trial and epoch
INTERIM_SEED = 0


def subset_indices(n: int, limit: int = INTERIM_SAMPLES) -> Any:
    """The validation samples an interim measurement uses: the first `limit` of a permutation
    of `range(n)` seeded with INTERIM_SEED, sorted; all `n` when n <= limit. The same samples
    for every trial and epoch of a task, so measurements compare."""
    import torch

    if n <= limit:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(INTERIM_SEED))
    return order[:limit].sort().values


def interim_metrics(model: Any, x: Any, keys: list[str], batch: int,
                    dist: Any = None) -> dict[str, float]:
    """Mean per-sample FLOPs of `x`, the parameter count, and batch-1 latency when `keys` (metric
    keys) names it, leaving the RNG streams and the train/eval mode as they were: the trial then
    trains exactly as it would unmeasured.

    With `dist` (a `condsearch.train._distributed.Dist`) the FLOPs batches are sharded over its
    evaluation ranks and gathered, the latency is timed on rank 0 alone while the others wait
    (so none competes for the cores) and sent to them: every rank returns the same figures."""
    import torch

    from condsearch.cost import batch1_latency_ms, count_params, per_sample_flops
    from condsearch.train._distributed import SINGLE

    dist = SINGLE if dist is None else dist
    was_training = model.training
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model.eval()
        try:
            starts = range(0, len(x), batch)
            flops = {k: per_sample_flops(model, x[starts[k] : starts[k] + batch])[1]
                     for k in dist.eval_batches(len(starts))}
            flops = dist.gather_batches(flops, len(starts))
            measured = {"flops": float(torch.cat(flops).double().mean()),
                        "params": float(count_params(model))}
            if "latency_ms" in keys:
                dist.barrier()
                latency = batch1_latency_ms(model, x) if dist.rank == 0 else None
                measured["latency_ms"] = dist.from_rank0(latency)
        finally:
            model.train(was_training)
    return measured
