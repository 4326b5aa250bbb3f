"""Running a function on each rank of a small gloo group of processes forked from the test's
own (torch.multiprocessing, CPU, no Ray): what the data-parallel tests share."""

from __future__ import annotations

import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch


def _rank_main(rank: int, world: int, store: str, out: str, timeout: float, work, args) -> None:
    from condsearch.train._distributed import Dist

    torch.set_num_threads(1)
    try:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
            timeout=timedelta(seconds=timeout / 2))
        result = {"value": work(Dist(rank, world), *args)}
    except BaseException:  # noqa: BLE001 - everything a rank meets goes back to the test
        result = {"error": traceback.format_exc()}
    torch.save(result, out)


def run_group(work, *args, world: int = 2, timeout: float = 60.0) -> list[dict]:
    """`work(dist, *args)` on each of `world` ranks; each rank's `{"value": ...}` or
    `{"error": traceback}` by rank. Fails the test when a rank dies without a result or the
    group outlives `timeout` seconds (a hung collective: gloo's own timeout is half of it)."""
    ctx = torch.multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"rank{r}.pt") for r in range(world)]
        procs = [ctx.Process(target=_rank_main, args=(r, world, str(Path(tmp) / "store"),
                                                      outs[r], timeout, work, args), daemon=True)
                 for r in range(world)]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        hung = [r for r, proc in enumerate(procs) if proc.is_alive()]
        for r in hung:
            procs[r].kill()
            procs[r].join()
        if hung:
            pytest.fail(f"ranks {hung} still ran after {timeout:.0f} s (a hung collective?)")
        for r, path in enumerate(outs):
            if not Path(path).exists():
                pytest.fail(f"rank {r} died (exit code {procs[r].exitcode}) without a result")
        return [torch.load(path, weights_only=False) for path in outs]
