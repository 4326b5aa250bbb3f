"""Early exit follows the adaptive block protocol."""

import pytest
import torch
from helpers import DIGITS_IO

from condsearch.blocks import EarlyExit, inference_knobs, routing_stats, set_inference_knobs
from condsearch.models import build_model
from condsearch.train import training_loss


def model_with(**exit_cfg):
    cfg = {"enabled": True, **exit_cfg}
    arch = {"model": {"backbone": "token_transformer", "dim": 16, "depth": 4, "heads": 4,
                      "components": {"early_exit": cfg}}}
    torch.manual_seed(0)
    return build_model(arch, DIGITS_IO)


def test_exit_heads_sit_after_every_layer_but_the_last_by_default():
    assert model_with().trunk.positions == [1, 2, 3]
    assert model_with(every=2).trunk.positions == [2]
    assert model_with(positions=[1, 3]).trunk.positions == [1, 3]


def test_positions_outside_the_network_are_refused():
    with pytest.raises(ValueError, match="exit positions"):
        model_with(positions=[4])


def test_training_loss_weights_every_intermediate_exit():
    model = model_with(loss_weight=0.25).train()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss = training_loss(model, x, y)
    final = torch.nn.functional.cross_entropy(model(x), y)
    exits = sum(torch.nn.functional.cross_entropy(e, y) for e in model.trunk._train_exit_logits)
    torch.testing.assert_close(loss, final + 0.25 * exits)


def test_eval_output_of_an_exited_sample_comes_from_its_exit_head():
    model = model_with(positions=[1]).eval()
    x = torch.randn(6, 1, 8, 8)
    set_inference_knobs(model, {"early_exit.threshold": 0.0})  # everyone exits at layer 1
    with torch.no_grad():
        out = model(x)
        h = model.trunk.layers[0](model.tokenizer(x))
        torch.testing.assert_close(out, model.trunk.exit_heads[0](h))


def test_threshold_is_an_inference_knob_and_stats_count_exits():
    model = model_with().eval()
    assert inference_knobs(model) == {"early_exit.threshold": 0.9}
    set_inference_knobs(model, {"early_exit.threshold": 0.0})
    with torch.no_grad():
        model(torch.randn(10, 1, 8, 8))
    stats = routing_stats(model)
    assert stats["early_exit.exit_rate.layer1"] == 1.0
    assert stats["early_exit.mean_exit_layer"] == 1.0
    with pytest.raises(KeyError, match="unknown inference knobs"):
        set_inference_knobs(model, {"early_exit.temperature": 1.0})


def test_confident_and_entropy_certainty_agree_on_the_extremes():
    from condsearch.blocks.early_exit import certainty

    sure = torch.tensor([[50.0, 0.0, 0.0]])
    unsure = torch.zeros(1, 3)
    for criterion in ("confidence", "entropy"):
        assert certainty(sure, criterion).item() == pytest.approx(1.0, abs=1e-6)
    assert certainty(unsure, "entropy").item() == pytest.approx(0.0, abs=1e-6)
    assert certainty(unsure, "confidence").item() == pytest.approx(1 / 3)


def test_the_dense_model_has_no_adaptive_block():
    arch = {"model": {"backbone": "token_transformer", "dim": 16, "depth": 2,
                      "components": {"early_exit": {"enabled": False}}}}
    model = build_model(arch, DIGITS_IO)
    assert not any(isinstance(m, EarlyExit) for m in model.modules())
    assert inference_knobs(model) == {}
