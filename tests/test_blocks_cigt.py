"""CIGT: one block per trellis layer per sample, information-gain routers, exact per-sample FLOPs."""

import math

import pytest
import torch
from flop_checks import assert_matches_alone
from helpers import DIGITS_IO

from condsearch.blocks import (
    inference_knobs,
    observe_targets,
    reset_routing_stats,
    routing_stats,
    set_inference_knobs,
)
from condsearch.blocks.cigt import CIGTTrellis, information_gain, mutual_information
from condsearch.cost import per_sample_flops
from condsearch.data import load_task
from condsearch.models._cigt import CIGT, thick_baseline, thin_baseline
from condsearch.train import evaluate, fit, training_loss

SMALL = {"channels": 4, "hidden": 16, "router_dim": 8}
# A fixed temperature at which untrained routers spread their samples over the blocks.
SPREAD = {"temperature": 0.2, "temperature_decay": 1.0, "temperature_min": 0.2}


def cigt(io=DIGITS_IO, seed=0, **section):
    torch.manual_seed(seed)
    return CIGT({"backbone": "cigt", "cigt": {**SMALL, **section}}, io)


def images(n, io=DIGITS_IO, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *io["input_shape"], generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 3


def rig(model, layer, favourite):
    """Make the router into `layer` send every sample to block `favourite`."""
    fc2 = model.trellis.routers[str(layer)].fc2
    with torch.no_grad():
        fc2.weight.zero_()
        fc2.bias.fill_(-100.0)
        fc2.bias[favourite] = 100.0


def rows_per_block(model):
    """Forward hooks counting the rows each block is called on: {(layer, block): rows}."""
    seen = {}
    for layer, blocks in enumerate(model.trellis.layers):
        for n, block in enumerate(blocks):
            def hook(_module, args, _out, key=(layer, n)):
                seen[key] = seen.get(key, 0) + args[0].shape[0]
            block.register_forward_hook(hook)
    return seen


def router_flops(model):
    """Per-sample FLOPs of the routers: 2 x (in x dim + dim x routes) each."""
    return sum(2 * (r.fc1.in_features * r.fc1.out_features + r.fc2.in_features * r.fc2.out_features)
               for r in model.trellis.routers.values())


# --- what runs, and what it costs -------------------------------------------------------------

@pytest.mark.parametrize("widths", [[1, 2, 4], [1, 3, 2], [1, 2, 2, 3]])
def test_on_one_path_each_sample_costs_what_it_costs_alone(widths):
    model = cigt(widths=widths).eval()
    x = images(48)
    assert_matches_alone(model, x)


def test_on_several_paths_each_sample_costs_what_it_costs_alone():
    model = cigt(widths=[1, 2, 4], **SPREAD).eval()
    set_inference_knobs(model, {"cigt.multipath_threshold": 0.2})
    x = images(64)
    _, flops = assert_matches_alone(model, x)
    assert len(set(flops.tolist())) >= 3  # samples take different numbers of paths


def test_with_threshold_one_every_sample_pays_for_exactly_one_path_and_the_routers():
    model = cigt(widths=[1, 2, 4]).eval()
    thin = CIGT({"backbone": "cigt", "cigt": thin_baseline({**SMALL, "widths": [1, 2, 4]})},
                DIGITS_IO).eval()
    x = images(32)
    _, flops = per_sample_flops(model, x)
    _, one_path = per_sample_flops(thin, x)
    assert flops.tolist() == (one_path + router_flops(model)).tolist()


def test_a_block_no_sample_is_routed_to_is_never_called():
    model = cigt(widths=[1, 2, 4], random_routing=0.0)
    rig(model, 1, favourite=1)
    rig(model, 2, favourite=2)
    seen = rows_per_block(model)
    x = images(20)
    for mode in (model.train, model.eval):
        mode()
        seen.clear()
        model(x)
        assert seen == {(0, 0): 20, (1, 1): 20, (2, 2): 20}


def test_eval_output_is_the_leaf_of_the_argmax_path():
    model = cigt(widths=[1, 2, 4]).eval()
    x = images(10)
    with torch.no_grad():
        out = model(x)
        h0 = model.trellis.layers[0][0](x)
        n1 = model.trellis.route_probabilities(1, h0).argmax(-1)
        for i in range(10):
            h1 = model.trellis.layers[1][int(n1[i])](h0[i : i + 1])
            n2 = int(model.trellis.route_probabilities(2, h1).argmax(-1))
            torch.testing.assert_close(out[i : i + 1], model.trellis.layers[2][n2](h1))


def executed_ops(model, x):
    """Names of the ATen operators a no-grad forward pass runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    names = []
    with torch.no_grad(), Record():
        model(x)
    return names


def calibrated(model, x):
    """Non-trivial BatchNorm statistics, so that folding them into the layers is exercised."""
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_inference_without_gradients_computes_what_the_plain_layers_compute():
    model = calibrated(cigt(widths=[1, 2, 4], seed=4), images(64, seed=5))  # routes spread
    x = images(24)
    with torch.no_grad():  # folded BatchNorm, pooling by maxima, one gather per route
        fast = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(24)])
    with torch.enable_grad():  # the layers as they are written, as in training
        plain = model(x).detach()
    torch.testing.assert_close(fast, plain)
    torch.testing.assert_close(alone, plain)


def test_one_sample_runs_its_blocks_with_no_gather_or_scatter():
    gathers = {"nonzero.default", "index_select.default", "index_copy_.default",
               "index_add_.default", "bincount.default", "sort.stable"}
    model = calibrated(cigt(widths=[1, 2, 4], seed=4), images(64, seed=5))  # routes spread
    assert not set(executed_ops(model, images(1))) & gathers
    reset_routing_stats(model)
    grouped = {"index_select.default", "index_copy_.default"}
    assert grouped <= set(executed_ops(model, images(16)))  # mixed routes: grouped by route
    assert 0 < routing_stats(model)["cigt.path_usage.layer1.block0"] < 1
    rig(model, 1, favourite=1)
    rig(model, 2, favourite=3)
    assert not set(executed_ops(model, images(16))) & gathers - {"bincount.default"}


def test_folded_constants_follow_the_weights():
    model = calibrated(cigt(widths=[1, 2, 4]), images(64, seed=5))
    x = images(8)
    norm = model.trellis.layers[1][0][1]
    with torch.no_grad():
        before = model(x)
        norm.running_var.mul_(4.0)  # an in-place update bumps the version
        after = model(x)
        assert not torch.allclose(before, after)
        with torch.enable_grad():
            torch.testing.assert_close(after, model(x).detach())
        norm.running_var.data.mul_(0.25)  # bumps nothing: seen once the mode is set again
        torch.testing.assert_close(model.eval()(x), before)


def test_multipath_output_is_the_probability_weighted_mean_of_the_blocks_run():
    model = cigt(widths=[1, 3], temperature=1.0, temperature_decay=1.0,
                 temperature_min=1.0).eval()
    set_inference_knobs(model, {"cigt.multipath_threshold": 0.0})  # every block runs
    x = images(6)
    with torch.no_grad():
        out = model(x)
        h = model.trellis.layers[0][0](x)
        p = model.trellis.route_probabilities(1, h)
        leaves = torch.stack([leaf(h) for leaf in model.trellis.layers[1]], 1)  # [B, 3, classes]
    torch.testing.assert_close(out, (p[..., None] * leaves).sum(1))


def test_a_lower_threshold_runs_more_paths_and_costs_more():
    model = cigt(widths=[1, 2, 4], **SPREAD).eval()
    x = images(64)
    _, single = per_sample_flops(model, x)
    assert routing_stats(model)["cigt.mean_paths.layer2"] == 1.0
    set_inference_knobs(model, {"cigt.multipath_threshold": 0.2})
    reset_routing_stats(model)
    _, multi = per_sample_flops(model, x)
    stats = routing_stats(model)
    assert stats["cigt.mean_paths.layer1"] > 1 and stats["cigt.mean_paths.layer2"] > 1
    assert (multi >= single).all() and (multi > single).any()
    assert multi.mean() > single.mean()


# --- the information-gain loss ----------------------------------------------------------------

def test_information_gain_matches_a_hand_computed_value():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
    y = torch.tensor([0, 1, 0, 1])
    # p(c, n) = [[3/8, 1/8], [1/8, 3/8]]; p(n) = p(c) = [1/2, 1/2]
    h_joint = -2 * (3 / 8 * math.log(3 / 8) + 1 / 8 * math.log(1 / 8))
    assert information_gain(probs, y, 2).item() == pytest.approx(2 * math.log(2) - h_joint)
    assert information_gain(probs, y, 2, balance=3.0).item() == pytest.approx(
        4 * math.log(2) - h_joint)


def test_with_balance_one_information_gain_is_the_route_class_mutual_information():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    routes = (y + torch.randint(0, 3, (200,), generator=g)) % 3  # partly follows the class
    counts = torch.zeros(4, 3).index_put_((y, routes), torch.ones(200), accumulate=True)
    hard = torch.nn.functional.one_hot(routes, 3).float()
    assert information_gain(hard, y, 4).item() == pytest.approx(mutual_information(counts),
                                                                abs=1e-6)
    mirror = torch.nn.functional.one_hot(y % 2, 2).float()  # 2 routes, classes {0,2} vs {1,3}
    best = information_gain(mirror, y, 4).item()
    for _ in range(20):
        soft = torch.rand(200, 2, generator=g).softmax(-1)
        assert information_gain(soft, y, 4).item() < best
    share = mirror.mean(0)  # the route is a function of the class: I(route; class) = H(route)
    assert best == pytest.approx(-(share * share.log()).sum().item(), abs=1e-6)


def test_aux_loss_is_minus_lambda_times_the_summed_gain_of_the_routers():
    model = cigt(widths=[1, 2, 4], ig_weight=0.5, balance=2.0).train()
    x, y = images(32), torch.randint(0, 10, (32,))
    model(x)
    gains = [information_gain(p, y, 10, balance=2.0) for p in model.trellis._train_probs.values()]
    assert len(gains) == 2
    torch.testing.assert_close(model.trellis.aux_loss(y), -0.5 * (gains[0] + gains[1]))
    model.eval()
    model(x)
    assert model.trellis.aux_loss(y) is None


def test_routers_learn_from_the_information_gain_alone():
    model = cigt(widths=[1, 2, 4]).train()
    model.trellis.training_progress(500, 100)  # after warm-up
    x, y = images(32), torch.randint(0, 10, (32,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    routers = list(model.trellis.routers.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in routers)
    model.zero_grad()
    training_loss(model, x, y).backward()
    assert all(p.grad is not None for p in routers)
    assert sum(float(p.grad.abs().sum()) for p in routers) > 0


# --- schedules --------------------------------------------------------------------------------

def test_temperature_anneals_per_optimizer_step_down_to_its_floor():
    trellis = cigt(temperature=25.0, temperature_decay=0.99, temperature_min=0.1).trellis
    assert trellis.temperature == 25.0
    trellis.training_progress(100, 10)
    assert trellis.temperature == pytest.approx(25.0 * 0.99**100)
    temps = []
    for step in range(0, 5000, 250):
        trellis.training_progress(step, 10)
        temps.append(trellis.temperature)
    assert temps == sorted(temps, reverse=True) and min(temps) == 0.1
    assert "trellis.step" in dict(cigt().named_buffers())  # saved with the weights


def test_warm_up_routes_at_random_then_by_argmax():
    model = cigt(widths=[1, 2], warmup_epochs=2, random_routing=0.0).train()
    rig(model, 1, favourite=0)
    seen = rows_per_block(model)
    x = images(400)
    model.trellis.training_progress(199, 100)  # still in warm-up (2 epochs of 100 steps)
    model(x)
    assert 150 < seen[(1, 1)] < 250  # half, at random, although the router wants block 0
    seen.clear()
    model.trellis.training_progress(200, 100)
    model(x)
    assert seen == {(0, 0): 400, (1, 0): 400}


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 1.0])
def test_a_random_routing_fraction_of_each_training_batch_is_routed_at_random(fraction):
    model = cigt(widths=[1, 2], warmup_epochs=0, random_routing=fraction).train()
    rig(model, 1, favourite=0)
    seen = rows_per_block(model)
    model(images(2000))
    # a random route picks block 1 half the time
    assert seen.get((1, 1), 0) == pytest.approx(2000 * fraction / 2, abs=60)
    model.eval()
    seen.clear()
    model(images(2000))
    assert (1, 1) not in seen


def test_without_a_schedule_there_is_no_warm_up():
    model = cigt(widths=[1, 2], random_routing=0.0).train()
    rig(model, 1, favourite=0)
    seen = rows_per_block(model)
    model(images(50))
    assert (1, 1) not in seen


# --- knobs and statistics ---------------------------------------------------------------------

def test_the_multipath_threshold_is_the_inference_knob():
    model = cigt(multipath_threshold=0.7)
    assert inference_knobs(model) == {"cigt.multipath_threshold": 0.7}
    set_inference_knobs(model, {"cigt.multipath_threshold": 0.3})
    assert model.trellis.multipath_threshold == 0.3
    with pytest.raises(KeyError, match="unknown inference knobs"):
        set_inference_knobs(model, {"cigt.temperature": 1.0})
    with pytest.raises(KeyError):
        model.trellis.set_inference_knobs(temperature=1.0)


def test_routing_stats_report_path_usage_mean_paths_and_route_class_information():
    model = cigt(widths=[1, 2, 4], **SPREAD).eval()
    set_inference_knobs(model, {"cigt.multipath_threshold": 0.3})
    y = torch.randint(0, 10, (40,))
    with torch.no_grad():
        for seed in range(3):
            model(images(40, seed=seed))
            observe_targets(model, y)
    stats = routing_stats(model)
    for layer, width in ((1, 2), (2, 4)):
        usage = [stats[f"cigt.path_usage.layer{layer}.block{n}"] for n in range(width)]
        assert all(0 <= u <= 1 for u in usage)
        assert sum(usage) == pytest.approx(stats[f"cigt.mean_paths.layer{layer}"])
        assert stats[f"cigt.mean_paths.layer{layer}"] >= 1
        assert 0 <= stats[f"cigt.route_class_mi.layer{layer}"] <= math.log(width)
    assert not any(k.startswith("cigt.path_usage.layer0") for k in stats)
    reset_routing_stats(model)
    assert routing_stats(model) == {}


def test_statistics_of_samples_one_at_a_time_equal_those_of_the_batch():
    model = calibrated(cigt(widths=[1, 2, 4], seed=4), images(64, seed=5))
    x, y = images(20), torch.randint(0, 10, (20,))
    with torch.no_grad():
        model(x)
        observe_targets(model, y)
        batched = routing_stats(model)
        reset_routing_stats(model)
        for i in range(20):
            model(x[i : i + 1])
            observe_targets(model, y[i : i + 1])
    assert routing_stats(model) == pytest.approx(batched)


def test_hard_routes_of_one_sample_follow_torch_argmax():
    from condsearch.blocks.cigt import _argmax

    for row in ([0.5, 2.0, 2.0, -1.0], [3.0, 1.0], [1.0, float("nan"), 5.0, float("nan")],
                [-2.0, -1.0, -1.0]):
        assert _argmax(row) == int(torch.tensor(row).argmax())


def test_route_class_information_is_the_class_entropy_when_routes_mirror_classes():
    model = cigt(widths=[1, 2]).eval()
    rig(model, 1, favourite=0)
    with torch.no_grad():
        model(images(30))
    observe_targets(model, torch.zeros(30, dtype=torch.long))
    assert routing_stats(model)["cigt.route_class_mi.layer1"] == 0.0  # one route, one class
    counts = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    assert mutual_information(counts) == pytest.approx(math.log(2))


# --- construction -----------------------------------------------------------------------------

def test_non_image_inputs_are_refused_with_the_reason():
    io = {"input_kind": "sequence", "input_shape": [16], "num_classes": 2, "vocab_size": 3}
    with pytest.raises(ValueError, match="needs image inputs"):
        CIGT({"backbone": "cigt", "cigt": {}}, io)


@pytest.mark.parametrize("section,message", [
    ({"widths": [2, 2]}, "first with one block"),
    ({"widths": [1]}, "2 or more layers"),
    ({"channels": [8, 8]}, "2 values for 3 layers"),
    ({"width": [1, 2]}, "unknown cigt settings"),
])
def test_bad_settings_are_refused(section, message):
    with pytest.raises(ValueError, match=message):
        CIGT({"backbone": "cigt", "cigt": section}, DIGITS_IO)


def test_a_trellis_needs_a_router_for_each_layer_with_several_blocks():
    with pytest.raises(ValueError, match="routers are needed"):
        CIGTTrellis([[torch.nn.Identity()], [torch.nn.Identity(), torch.nn.Identity()]], {}, 2)


def test_baselines_are_single_paths_thin_and_thick():
    section = {"widths": [1, 2, 4], "channels": 32, "hidden": 128}
    assert thin_baseline(section)["widths"] == [1, 1, 1]
    thick = thick_baseline(section)
    assert (thick["widths"], thick["channels"], thick["hidden"]) == ([1, 1, 1], [32, 64, 128], 512)
    fashion = {"input_kind": "image", "input_shape": [1, 28, 28], "num_classes": 10}
    x = images(4, fashion)
    costs = {}
    for name, cfg in (("thin", thin_baseline(section)), ("cigt", section),
                      ("thick", thick_baseline(section))):
        model = CIGT({"backbone": "cigt", "cigt": cfg}, fashion).eval()
        costs[name] = float(per_sample_flops(model, x)[1].mean())
    assert costs["thin"] < costs["cigt"] < 1.05 * costs["thin"] < costs["thick"] / 2
    assert routing_stats(CIGT({"backbone": "cigt", "cigt": thin_baseline(section)},
                              fashion)) == {}


# --- training ---------------------------------------------------------------------------------

def test_a_short_training_on_digits_learns_and_evaluates_with_cigt_statistics():
    torch.manual_seed(0)
    task = load_task({"dataset": "digits", "seed": 0})
    model = CIGT({"backbone": "cigt", "cigt": {"channels": 16, "hidden": 64,
                                               "temperature_decay": 0.99}}, task.info())
    history = fit(model, task, {"epochs": 5, "batch_size": 64, "lr": 3e-3},
                  device=torch.device("cpu"), seed=0)
    assert history[-1]["val_accuracy"] > 0.6
    result = evaluate(model, task, "val")
    assert result.accuracy > 0.6
    assert result.stats["cigt.mean_paths.layer1"] == 1.0
    assert {"cigt.path_usage.layer2.block3", "cigt.route_class_mi.layer2"} <= set(result.stats)
    assert len(set(result.flops.tolist())) == 1  # one path each: every path costs the same
