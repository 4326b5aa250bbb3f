"""The conv_net backbone: residual stages that halve the map, early exits after stages with exact
per-sample FLOPs, exited samples skipping the later stages, every head trained, a real fit."""

import math

import pytest
import torch
import torch.nn.functional as F
from flop_checks import assert_matches_alone

from condsearch.blocks import (
    EarlyExit,
    inference_knobs,
    routing_stats,
    set_inference_knobs,
    total_aux_loss,
)
from condsearch.blocks.early_exit import certainty
from condsearch.cost import per_sample_flops, reference_counter
from condsearch.data import load_task
from condsearch.models import ConvNet, build_model
from condsearch.space._declaration import complete
from condsearch.space.declared.conv_net import PARAMS as CONV_NET_KEYS
from condsearch.space.declared.early_exit import PARAMS as EARLY_EXIT_KEYS
from condsearch.train import fit, training_loss

DIGITS = {"dataset": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2,
          "train_limit": None, "length": 16, "size": 12000, "path": None, "kwargs": {}}
TRAIN = {"epochs": 1, "steps": None, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05,
         "warmup_fraction": 0.05, "eval_batch_size": 256, "device": "cpu", "precision": "fp32"}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 reference passes are much faster on a busy machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_task(DIGITS)


def image_io(x: torch.Tensor) -> dict:
    return {"input_kind": "image", "input_shape": list(x.shape[1:]), "num_classes": 10,
            "vocab_size": None}


def section(exits=None, **keys) -> dict:
    """A completed model section: the declarations' defaults, overridden by `keys` and `exits`."""
    early_exit = complete(EARLY_EXIT_KEYS, exits or {"enabled": False})
    return {"backbone": "conv_net", **complete(CONV_NET_KEYS, keys),
            "components": {"early_exit": early_exit}}


def build(model: dict, io: dict, seed: int = 0) -> ConvNet:
    torch.manual_seed(seed)
    net = ConvNet(model, io).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data.normal_(0, 2.0)  # decisive heads: certainties spread over the samples
    return net


def batches(digits) -> list[torch.Tensor]:
    """8 digits at their own 8x8, and 2 upsampled to 28x28 (Fashion-MNIST's size)."""
    x = digits.val[0]
    return [x[:8], F.interpolate(x[8:10], size=(28, 28), mode="bilinear")]


def first_exit_certainty(net: ConvNet, x: torch.Tensor) -> torch.Tensor:
    """Each sample's certainty at the first exit head, computed on the whole batch."""
    trunk = net.trunk
    with torch.no_grad():
        h = net.stem(x)
        for layer in trunk.layers[: trunk.positions[0]]:
            h = layer(h)
        return certainty(trunk.exit_heads[0](h), trunk.criterion)


def threshold_for(level: str, net: ConvNet, x: torch.Tensor) -> float:
    """A threshold at which all, some (about half) or none of the samples leave at exit 1."""
    if level == "all":
        return 1e-6
    if level == "none":
        return 1.0
    c = first_exit_certainty(net, x).sort().values
    n = c.numel()
    return float((c[(n - 1) // 2] + c[n // 2]) / 2)


def test_stages_halve_the_map_while_it_is_at_least_2x2():
    net = build(section(stem=8, widths=[8, 8, 16, 16, 32], depths=[1, 1, 1, 1, 1]), image_io(
        torch.zeros(1, 1, 8, 8)))
    h, sides = net.stem(torch.randn(2, 1, 8, 8)), []
    for stage in net.trunk.layers:
        h = stage(h)
        sides.append(h.shape[-1])
    assert sides == [8, 4, 2, 1, 1]
    shortcuts = [type(stage[0].shortcut).__name__ for stage in net.trunk.layers]
    # a projection wherever the map or the width changes: stages 2-4 stride, stage 5 widens
    assert shortcuts == ["Identity", "Sequential", "Sequential", "Sequential", "Sequential"]
    assert net.trunk.layers[4][0].conv1.stride == (1, 1)


def test_each_head_reads_the_width_of_the_stage_it_follows():
    exits = {"enabled": True, "every": 1}
    net = build(section(exits, widths=[8, 16, 24], depths=[2, 1, 1]), image_io(
        torch.zeros(1, 1, 8, 8)))
    assert isinstance(net.trunk, EarlyExit)
    assert net.trunk.positions == [1, 2]
    assert [h.fc.in_features for h in net.trunk.exit_heads] == [8, 16]
    assert net.trunk.final_head.fc.in_features == 24
    assert len(net.trunk.layers[0]) == 2


def test_build_model_builds_it_from_a_sparse_arch_with_the_declared_defaults():
    arch = {"model": {"backbone": "conv_net", "components": {"early_exit": {"enabled": True}}}}
    net = build_model(arch, image_io(torch.zeros(1, 1, 8, 8)))
    assert isinstance(net, ConvNet) and isinstance(net.trunk, EarlyExit)
    assert net.trunk.positions == [1, 2] and net.trunk.threshold == 0.9


def test_exits_off_is_the_dense_net_with_no_adaptive_block():
    net = build(section({"enabled": False}), image_io(torch.zeros(1, 1, 8, 8)))
    assert not any(isinstance(m, EarlyExit) for m in net.modules())
    assert inference_knobs(net) == {}


DENSE = [({}, "3 stages"), ({"depths": [2, 1, 1]}, "depths 2-1-1"), ({"kernel": 5}, "kernel 5")]


@pytest.mark.parametrize("keys", [k for k, _ in DENSE], ids=[i for _, i in DENSE])
def test_per_sample_flops_of_the_dense_net_match_each_sample_alone(digits, keys):
    for x in batches(digits):
        net = build(section({"enabled": False}, **keys), image_io(x))
        flops = assert_matches_alone(net, x)[1]
        assert flops.unique().numel() == 1


EXITS = [
    ({}, {"every": 1}, "after every stage"),
    ({}, {"positions": [1]}, "after stage 1"),
    ({}, {"positions": [2]}, "after stage 2 of 3"),
    ({}, {"every": 1, "criterion": "entropy"}, "entropy"),
    ({"depths": [2, 1, 1]}, {"every": 1}, "depths 2-1-1"),
    ({"kernel": 5}, {"every": 1}, "kernel 5"),
]


@pytest.mark.parametrize("level", ["none", "some", "all"])
@pytest.mark.parametrize(("keys", "exits"), [(k, e) for k, e, _ in EXITS],
                         ids=[i for _, _, i in EXITS])
def test_per_sample_flops_with_early_exit_match_each_sample_alone(digits, keys, exits, level):
    for x in batches(digits):
        net = build(section({"enabled": True, **exits}, **keys), image_io(x))
        threshold = threshold_for(level, net, x)
        set_inference_knobs(net, {"early_exit.threshold": threshold})
        leaves = first_exit_certainty(net, x) >= threshold
        flops = assert_matches_alone(net, x)[1]
        stats = routing_stats(net)
        first, last = net.trunk.positions[0], len(net.trunk.layers)
        if level == "all":
            assert stats[f"early_exit.exit_rate.layer{first}"] == 1.0
            assert flops.unique().numel() == 1
        elif level == "none":
            assert stats[f"early_exit.exit_rate.layer{last}"] == 1.0
            assert flops.unique().numel() == 1
        else:
            assert 0 < leaves.sum() < x.shape[0]
            assert flops[leaves].max() < flops[~leaves].min()


def test_a_sample_that_exits_after_stage_1_costs_only_the_stem_stage_1_and_its_head(digits):
    x = digits.val[0][:8]
    net = build(section({"enabled": True, "every": 1}), image_io(x))
    set_inference_knobs(net, {"early_exit.threshold": threshold_for("some", net, x)})
    _, flops = per_sample_flops(net, x)
    early = int(flops.argmin())
    with reference_counter() as counter, torch.no_grad():
        net.trunk.exit_heads[0](net.trunk.layers[0](net.stem(x[early : early + 1])))
    assert flops[early].item() == pytest.approx(counter.get_total_flops(), rel=1e-9)
    assert flops.max() > flops[early]  # the others pay for the stages they went on to


def test_training_runs_every_head_on_every_sample_and_weights_the_exit_loss(digits):
    x, y = digits.train[0][:16], digits.train[1][:16]
    net = build(section({"enabled": True, "every": 1, "loss_weight": 0.25}), image_io(x)).train()
    seen: dict[str, torch.Tensor] = {}
    heads = {"exit1": net.trunk.exit_heads[0], "exit2": net.trunk.exit_heads[1],
             "final": net.trunk.final_head}
    for name, head in heads.items():
        head.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out))
    loss = training_loss(net, x, y)
    assert {name: out.shape[0] for name, out in seen.items()} == {n: 16 for n in heads}
    exits = F.cross_entropy(seen["exit1"], y) + F.cross_entropy(seen["exit2"], y)
    torch.testing.assert_close(total_aux_loss(net, y), 0.25 * exits)
    torch.testing.assert_close(loss, F.cross_entropy(seen["final"], y) + 0.25 * exits)


def test_fit_trains_it_for_an_epoch_on_digits(digits):
    torch.manual_seed(0)
    net = ConvNet(section({"enabled": True, "every": 1}), digits.info())
    history = fit(net, digits, TRAIN, device=torch.device("cpu"), seed=0)
    assert len(history) == 1
    assert math.isfinite(history[0]["train_loss"])
    assert history[0]["val_accuracy"] > 0.2  # twice chance after 17 steps: it learns


def test_inputs_that_are_not_images_are_refused():
    io = {"input_kind": "sequence", "input_shape": [12], "num_classes": 2, "vocab_size": 3}
    with pytest.raises(ValueError, match="conv_net"):
        ConvNet(section(), io)


@pytest.mark.parametrize(("keys", "problem"), [({"kernel": 4}, "even"),
                                               ({"depths": [1, 1]}, "one entry per stage")])
def test_an_even_kernel_or_widths_and_depths_of_unequal_length_are_refused(keys, problem):
    with pytest.raises(ValueError, match=problem):
        ConvNet(section(**keys), image_io(torch.zeros(1, 1, 8, 8)))
