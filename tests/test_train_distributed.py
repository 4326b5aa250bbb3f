"""Data-parallel training and evaluation (`condsearch/train/_distributed.py`): W processes train
as one on the global batch, and evaluate exactly as one process on the same weights.

The group tests run 2 ranks as processes forked from this one (torch.multiprocessing, gloo on
the CPU, no Ray): they start in milliseconds with this process's imports and data caches warm.
What a rank runs is a function of this module with plain arguments (weights, not live models),
so the tests hold under any start method. A rank's exception fails the test with its traceback;
a hung collective fails it after a timeout instead of hanging the suite (gloo's own timeout,
then the join's).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tempfile
import time
from pathlib import Path

import pytest
import torch
from gloo_group import run_group

from condsearch.blocks import adaptive_blocks, observe_targets, reset_routing_stats, routing_stats
from condsearch.data import load_task
from condsearch.models import build_model
from condsearch.train import TrainingDiverged, evaluate, fit, sweep_knobs
from condsearch.train._distributed import SINGLE, Dist, TrainingTimedOut
from condsearch.train._evaluate import accuracy
from condsearch.train._fit import FitState
from condsearch.train._interim import interim_metrics

CPU = torch.device("cpu")
DIGITS = {"dataset": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2,
          "train_limit": 200}
PARITY = {"dataset": "parity", "size": 900, "length": 8, "seed": 0, "val_fraction": 0.4,
          "test_fraction": 0.1, "train_limit": 200}
#: 359 validation digits in batches of 80: 5 batches, the last one short; rank 0 runs 3, rank 1 2
EVAL_BATCH = 80
#: seconds a group may take before the test fails as hung
GROUP_TIMEOUT = 60.0


# ---- running a group of ranks ------------------------------------------------------------------


def in_group(work, *args, world: int = 2) -> list:
    """`work(dist, *args)` on each of `world` ranks of one gloo group; their results by rank.
    Fails the test with a rank's traceback, or when the group outlives GROUP_TIMEOUT."""
    results = []
    for r, result in enumerate(run_group(work, *args, world=world, timeout=GROUP_TIMEOUT)):
        if "error" in result:
            pytest.fail(f"rank {r} raised:\n{result['error']}")
        results.append(result["value"])
    return results


# ---- models ------------------------------------------------------------------------------------


def transformer(components: dict, **keys) -> dict:
    return {"backbone": "token_transformer", "dim": 16, "depth": 2, "heads": 4, "patch_size": 4,
            "components": components, **keys}


#: kind -> (task, model section, sweep): every adaptive block, and a conv net with BatchNorm
MODELS = {
    "moe": (DIGITS, transformer({"moe": {"enabled": True, "experts": 4, "top_k": 2,
                                         "eval_capacity_factor": 0.75}}),
            {"moe.eval_capacity_factor": [0.5, 2.0]}),
    "early_exit": (DIGITS, transformer({"early_exit": {"enabled": True, "every": 1,
                                                       "threshold": 0.7}}),
                   {"early_exit.threshold": [0.5, 0.9]}),
    "token_selection": (DIGITS, transformer({"token_selection": {
        "enabled": True, "keep_ratio": 0.5, "scorer": "cls_attention"}}),
        {"token_selection.keep_ratio": [0.25]}),
    "cigt": (DIGITS, {"backbone": "cigt", "cigt": {
        "channels": 4, "hidden": 16, "router_dim": 8, "temperature": 0.2,
        "temperature_decay": 1.0, "temperature_min": 0.2}}, {"cigt.multipath_threshold": [0.3]}),
    "nac": (DIGITS, {"backbone": "nac", "nac": {
        "dim": 16, "input_modules": 4, "mediators": 8, "layers": 1, "heads": 2,
        "signature_dim": 8, "code_dim": 8, "patch_size": 4, "keep_ratio": 0.5}},
        {"nac.keep_ratio": [0.25]}),
    "adatape": (PARITY, transformer({"adatape": {"enabled": True, "bank_size": 12, "max_tape": 4,
                                                 "tokens_per_step": 3, "theta": 1.4,
                                                 "insert_after": 1}}, patch_size=2),
                {"adatape.theta": [2.5]}),
    "conv_net": (DIGITS, {"backbone": "conv_net", "stem": 4, "widths": [4, 8], "depths": [1, 1],
                          "components": {"early_exit": {"enabled": True, "threshold": 0.7}}},
                 {"early_exit.threshold": [0.5]}),
}


def trained(kind: str, steps: int = 4):
    """A `kind` model after a few training steps (BatchNorm has running statistics), its
    weights then jittered and its linear layers sharpened, so samples take different paths;
    its task and sweep."""
    task_spec, section, sweep = MODELS[kind]
    task = load_task(task_spec)
    torch.manual_seed(0)
    arch = {"model": section, "train": {"steps": steps, "batch_size": 32, "lr": 5e-3}}
    model = build_model(arch, task)
    fit(model, task, arch["train"], device=CPU, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(4.0)  # decisive exit heads and routers
    return model.eval(), task, sweep


def as_trained(kind: str, weights: dict):
    """The `kind` model holding `weights` (a rank's copy of the parent's trained model)."""
    task_spec, section, sweep = MODELS[kind]
    task = load_task(task_spec)
    model = build_model({"model": section}, task)
    model.load_state_dict(weights)
    return model.eval(), task, sweep


def measurements(dist: Dist, model, task, sweep) -> dict:
    """Everything a trial measures on the validation split, as `dist` measures it."""
    x_val = task.val[0]
    evaluation = evaluate(model, task, "val", EVAL_BATCH, dist=dist)
    return {
        "accuracy": accuracy(model, task.val, EVAL_BATCH, CPU, dist),
        "evaluation": (evaluation.accuracy, evaluation.flops, evaluation.stats),
        "sweep": [(knobs, e.accuracy, e.flops, e.stats)
                  for knobs, e in sweep_knobs(model, task, sweep, "val", EVAL_BATCH, dist=dist)],
        "interim": interim_metrics(model, x_val[:150], ["accuracy", "flops"], 32, dist),
    }


def assert_same(got, want, where: str = "") -> None:
    """Equal, tensors bit for bit."""
    if isinstance(want, torch.Tensor):
        assert torch.equal(got, want), where
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got} != {want}"


# ---- shares of a global batch (no processes) ---------------------------------------------------


def test_each_rank_trains_every_world_th_row_of_the_global_batch():
    batch = torch.arange(10, 20)
    shares = [Dist(r, 3).rows(batch) for r in range(3)]
    assert [s.tolist() for s in shares] == [[10, 13, 16, 19], [11, 14, 17], [12, 15, 18]]
    assert SINGLE.rows(batch) is batch


@pytest.mark.parametrize("rows", [1, 2, 5, 63, 64])
def test_loss_weights_make_the_average_gradient_the_global_mean(rows):
    """Rank r's mean loss times n_r*W/N, averaged over W ranks, is the mean over all N rows:
    the weights are proportional to the rows owned and sum to W."""
    world = 4
    ranks = [Dist(r, world) for r in range(world)]
    owned = [d.own_rows(rows) for d in ranks]
    assert sum(owned) == rows
    weights = [d.loss_weight(rows) for d in ranks]
    assert sum(weights) == pytest.approx(world)
    for d, n, w in zip(ranks, owned, weights, strict=True):
        assert w == pytest.approx(n * world / rows)
        if n == 0:  # an empty share still trains one row, which weighs nothing
            assert d.rows(torch.arange(rows)).numel() == 1 and w == 0
    assert SINGLE.loss_weight(rows) == 1.0


def test_evaluation_batches_are_dealt_round_robin_over_the_evaluation_ranks():
    assert [list(Dist(r, 2).eval_batches(5)) for r in range(2)] == [[0, 2, 4], [1, 3]]
    assert [list(Dist(r, 3, eval_ranks=2).eval_batches(5)) for r in range(3)] == [
        [0, 2, 4], [1, 3], []]
    assert list(SINGLE.eval_batches(5)) == [0, 1, 2, 3, 4]


def test_a_group_of_one_changes_nothing():
    model = torch.nn.Linear(2, 2)
    assert SINGLE.agree(True, False) == (True, False)
    assert SINGLE.sum_(3, 1.5) == (3, 1.5)
    assert SINGLE.from_rank0("x") == "x"
    SINGLE.sync_buffers(model)
    SINGLE.reduce_stats(model)
    SINGLE.barrier()
    assert not isinstance(SINGLE.wrap(model), torch.nn.parallel.DistributedDataParallel)
    with pytest.raises(ValueError, match="eval_ranks"):
        Dist(0, 2, eval_ranks=3)


def test_each_epoch_reseeds_each_rank_from_seed_rank_and_epoch():
    """Router noise and dropout differ between ranks, and a resume needs no rank's RNG state:
    an epoch's random numbers depend only on (seed, rank, epoch). A group of one keeps its
    streams (single-process fits are unchanged)."""

    def draws(dist: Dist, epoch: int) -> torch.Tensor:
        dist.seed_epoch(7, epoch)
        return torch.rand(4)

    with torch.random.fork_rng():
        ranks = [draws(Dist(r, 2), 1) for r in range(2)]
        assert not torch.equal(ranks[0], ranks[1])
        assert torch.equal(draws(Dist(1, 2), 1), ranks[1])
        assert not torch.equal(draws(Dist(1, 2), 2), ranks[1])
        torch.manual_seed(0)
        expected = torch.rand(4)
        torch.manual_seed(0)
        assert torch.equal(draws(SINGLE, 1), expected)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_block_counters_of_two_shards_add_up_to_the_whole(kind):
    """`stats_state` of two halves of an evaluation, summed and loaded, gives the routing
    statistics of the whole (no processes: two copies of the model)."""
    task_spec, section, _ = MODELS[kind]
    task = load_task(task_spec)
    torch.manual_seed(0)
    model = build_model({"model": section}, task).eval()
    halves = [copy.deepcopy(model), copy.deepcopy(model)]
    x, y = task.val
    for m in (model, *halves):
        reset_routing_stats(m)
    with torch.inference_mode():
        for k, start in enumerate(range(0, x.shape[0], EVAL_BATCH)):
            xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
            for m in (model, halves[k % 2]):
                m(xb)
                observe_targets(m, yb)
    whole = routing_stats(model)
    assert whole, f"{kind} reports no statistics"
    for a, b in zip(adaptive_blocks(halves[0]), adaptive_blocks(halves[1]), strict=True):
        sa, sb = a.stats_state(), b.stats_state()
        assert sa.keys() == sb.keys()
        a.load_stats_state({k: sa[k] + sb[k] for k in sa})
    assert routing_stats(halves[0]) == whole


# ---- two ranks evaluate exactly as one -----------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_two_ranks_evaluate_exactly_as_one_process(kind):
    """Accuracy, every sample's FLOPs, routing statistics, the knob sweep and the interim
    metrics of 2 ranks sharing the evaluation equal a single process's on the same weights,
    and every rank ends with them."""
    model, task, sweep = trained(kind)
    alone = measurements(SINGLE, model, task, sweep)
    flops = alone["evaluation"][1]
    assert flops.numel() == task.val[0].shape[0]
    both = in_group(_measured_by_rank, kind, model.state_dict())
    for rank, got in enumerate(both):
        assert_same(got, alone, f"rank{rank}")


def _measured_by_rank(dist: Dist, kind: str, weights: dict) -> dict:
    return measurements(dist, *as_trained(kind, weights))


def _evaluated_by_rank0(dist: Dist, kind: str, weights: dict) -> torch.Tensor:
    model, task, _ = as_trained(kind, weights)
    return evaluate(model, task, "val", EVAL_BATCH,
                    dist=Dist(dist.rank, dist.world, eval_ranks=1)).flops


def test_with_one_evaluation_rank_rank_0_evaluates_and_every_rank_gets_the_result():
    model, task, _ = trained("moe")
    flops = evaluate(model, task, "val", EVAL_BATCH).flops
    assert all(torch.equal(f, flops)
               for f in in_group(_evaluated_by_rank0, "moe", model.state_dict()))


# ---- two ranks train as one ----------------------------------------------------------------------


def _fit_and_weights(dist: Dist, section: dict | None, train: dict):
    """`fit` a model (a plain MLP for section None) on the digits; its history and weights."""
    task = load_task(DIGITS)
    torch.manual_seed(0)
    model = (build_model({"model": section}, task) if section is not None else
             torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.GELU(),
                                 torch.nn.Linear(32, 10)))
    history = fit(model, task, train, device=CPU, seed=0, dist=dist)
    return history, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("batch", [63, 3, 1])
def test_steps_of_two_ranks_equal_steps_on_the_global_batch(batch):
    """Rank 0 trains rows 0, 2, 4, ... of each global batch, rank 1 rows 1, 3, ... (none of a
    batch of 1: it then trains a row that weighs nothing); the loss weights make DDP's averaged
    gradient that of the global batch's mean loss, so both ranks take the single process's
    steps. (A dense MLP: AdamW divides each gradient by its size, which would blow up the
    rounding of a gradient that is zero but for rounding, as an attention key bias's is.)"""
    train = {"steps": 3, "batch_size": batch, "lr": 5e-3, "eval_batch_size": 128}
    _, alone = _fit_and_weights(SINGLE, None, train)
    for rank, (_, weights) in enumerate(in_group(_fit_and_weights, None, train)):
        for name, want in alone.items():
            torch.testing.assert_close(weights[name], want, atol=1e-6, rtol=1e-5,
                                       msg=lambda m, n=name, r=rank: f"rank {r} {n}: {m}")


@pytest.mark.parametrize("components", [
    # 5 tokens a sample and one sample a rank: at most 5 of the 8 experts run on each rank
    {"moe": {"enabled": True, "experts": 8, "top_k": 1, "router_noise": 0.5}},
    # the exit heads reach the loss only through the aux loss
    {"early_exit": {"enabled": True, "every": 1, "threshold": 0.5}},
], ids=["moe_idle_experts", "early_exit_aux_heads"])
def test_ranks_train_adaptive_blocks_and_keep_identical_weights(components):
    train = {"steps": 5, "batch_size": 2, "lr": 5e-3, "eval_batch_size": 128}
    results = in_group(_fit_and_weights, transformer(components), train)
    (h0, w0), (h1, w1) = results
    assert h0 == h1
    assert_same(w1, w0, "weights")


def _expert_grads_after_one_step(dist: Dist) -> list:
    from condsearch.blocks import MoEFeedForward

    task = load_task(DIGITS)
    torch.manual_seed(0)
    model = build_model({"model": transformer({"moe": {"enabled": True, "experts": 4,
                                                       "top_k": 1}}, depth=1)}, task)
    moe = next(m for m in model.modules() if isinstance(m, MoEFeedForward))
    with torch.no_grad():  # the router sends every token to expert 0 on rank 0, 1 on rank 1
        moe.router.weight.zero_()
    bias = torch.zeros(4)
    bias[dist.rank] = 100.0
    moe.router.register_forward_hook(lambda m, i, o: o + bias)
    x, y = task.train[0][:4], task.train[1][:4]
    trainee = dist.wrap(model)
    trainee(x, y).backward()
    return [None if e[0].weight.grad is None else e[0].weight.grad.clone() for e in moe.experts]


def test_an_expert_idle_on_one_rank_gets_the_others_gradient_and_one_idle_everywhere_none():
    """Through `Dist.wrap`: a parameter used on some rank gets the averaged gradient on every
    rank; one no rank used keeps no gradient, so AdamW leaves it alone as in one process."""
    g0, g1 = in_group(_expert_grads_after_one_step)
    assert g0[0] is not None and g0[1] is not None and g0[2] is None and g0[3] is None
    assert_same(g1, g0, "grads")


#: router noise and dropout draw random numbers on every rank; a BatchNorm conv net's running
#: statistics are broadcast from rank 0
RESUMED = {
    "transformer": transformer({"moe": {"enabled": True, "experts": 4, "router_noise": 0.5},
                                "early_exit": {"enabled": True, "every": 1}}, dropout=0.1),
    "conv_net": MODELS["conv_net"][1],
}


def _fit_saving_epoch_1(dist: Dist, section: dict, saved: str | None, keep: str | None):
    """A 2-epoch fit; rank 0 writes its state after epoch 1 to `keep`; each rank resumes from
    the file `saved` (its own copy, as each worker loads the checkpoint)."""
    task = load_task(DIGITS)
    torch.manual_seed(0)
    model = build_model({"model": section}, task)
    state = FitState(torch.load(saved, weights_only=False) if saved else None)

    def epoch_done(epoch, epochs, record):
        if keep and epoch == 1 and dist.rank == 0:
            torch.save(state.save(), keep)

    train = {"epochs": 2, "batch_size": 32, "lr": 5e-3, "eval_batch_size": 128}
    history = fit(model, task, train, device=CPU, seed=4, state=state, on_epoch=epoch_done,
                  dist=dist)
    return history, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", sorted(RESUMED))
def test_a_fit_saved_after_epoch_1_and_resumed_in_a_new_group_ends_as_an_uninterrupted_one(kind):
    """Rank 0's checkpoint alone resumes every rank: the resumed fit's history and weights
    equal the uninterrupted fit's, bit for bit."""
    section = RESUMED[kind]
    with tempfile.TemporaryDirectory() as tmp:
        keep = str(Path(tmp) / "epoch1.pt")
        whole = in_group(_fit_saving_epoch_1, section, None, keep)
        resumed = in_group(_fit_saving_epoch_1, section, keep, None)
    assert_same(whole[1], whole[0], "ranks")
    for rank in range(2):
        assert_same(resumed[rank], whole[0], f"rank{rank}")


def _diverging_fit(dist: Dist, task, train: dict, seed: int) -> str:
    torch.manual_seed(0)
    model = build_model({"model": transformer({})}, task)
    with pytest.raises(TrainingDiverged) as info:
        fit(model, task, train, device=CPU, seed=seed, dist=dist)
    return str(info.value)


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step():
    """One poisoned training row: only the rank whose share holds it sees a NaN loss, yet both
    raise TrainingDiverged at the step that trains it (and none waits in a collective)."""
    task = load_task(DIGITS)
    batch, seed, poisoned = 32, 0, 5
    x = task.train[0].clone()
    x[poisoned] = float("nan")
    task = dataclasses.replace(task, train=(x, task.train[1]))
    order = torch.randperm(task.train[0].shape[0], generator=torch.Generator().manual_seed(seed))
    position = int((order == poisoned).nonzero())
    step, owner = position // batch + 1, (position % batch) % 2
    messages = in_group(_diverging_fit, task, {"epochs": 1, "batch_size": batch}, seed)
    assert [int(re.search(r"at step (\d+)", m).group(1)) for m in messages] == [step, step]
    assert "loss became nan" in messages[owner]
    assert "on another rank" in messages[1 - owner]


def _fit_late_on_rank_1(dist: Dist) -> bool:
    task = load_task(DIGITS)
    torch.manual_seed(0)
    model = build_model({"model": transformer({})}, task)
    late = Dist(dist.rank, dist.world, deadline=time.time() + (-1 if dist.rank else 3600))
    with pytest.raises(TrainingTimedOut, match="at step 1 "):
        fit(model, task, {"epochs": 1, "batch_size": 32}, device=CPU, seed=0, dist=late)
    return True


def test_a_deadline_passed_on_one_rank_stops_both():
    """A deadline one rank's clock has passed (clocks may differ) stops both at step 1."""
    assert in_group(_fit_late_on_rank_1) == [True, True]
