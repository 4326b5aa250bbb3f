"""MoE and token selection: real dispatch, exact per-sample FLOPs, knobs and statistics."""

import pytest
import torch
from flop_checks import assert_matches_alone

from condsearch.blocks import (
    inference_knobs,
    reset_routing_stats,
    routing_stats,
    set_inference_knobs,
)
from condsearch.blocks.moe import MoEFeedForward
from condsearch.blocks.token_selection import TokenSelection
from condsearch.cost import per_sample_flops
from condsearch.models._layers import TransformerLayer


@pytest.mark.parametrize("experts,top_k,capacity", [(4, 1, 2.0), (4, 2, 1.0), (8, 2, 0.5), (6, 3, 0.25)])
def test_moe_samples_match_flop_counter_alone(experts, top_k, capacity):
    torch.manual_seed(experts + top_k)
    moe = MoEFeedForward(16, 32, experts=experts, top_k=top_k, eval_capacity_factor=capacity).eval()
    x = torch.randn(40, 9, 16) * torch.rand(40, 1, 1) * 3  # samples route differently
    out, flops = assert_matches_alone(moe, x)
    for i in range(0, 40, 7):  # a sample's output does not depend on its batch-mates
        with torch.no_grad():
            torch.testing.assert_close(moe(x[i : i + 1]), out[i : i + 1], atol=1e-5, rtol=1e-5)


def test_moe_capacity_overflow_skips_the_expert():
    torch.manual_seed(0)
    moe = MoEFeedForward(8, 16, experts=2, top_k=1, eval_capacity_factor=2.0).eval()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 1.0  # positive inputs all prefer expert 0
    x = torch.rand(1, 10, 8) + 0.1
    _, roomy = per_sample_flops(moe, x)
    set_inference_knobs(moe, {"moe.eval_capacity_factor": 0.2})  # expert 0 takes 1 of the 10 tokens
    reset_routing_stats(moe)
    out, tight = per_sample_flops(moe, x)
    assert tight.item() < roomy.item()
    assert (out.abs().sum(-1) == 0).sum() == 9  # the other 9 tokens pass with no expert output
    assert routing_stats(moe)["moe.dropped_fraction"] == pytest.approx(0.9)


def test_moe_runs_each_expert_only_on_its_tokens():
    torch.manual_seed(1)
    moe = MoEFeedForward(16, 64, experts=8, top_k=1, eval_capacity_factor=8.0).eval()
    x = torch.randn(4, 10, 16)
    _, flops = per_sample_flops(moe, x)
    router = 2 * 10 * 16 * 8
    one_expert_per_token = 2 * 10 * (16 * 64 + 64 * 16)
    assert flops.tolist() == [router + one_expert_per_token] * 4  # not 8 experts' worth


def test_moe_training_exposes_a_load_balancing_loss_and_eval_statistics():
    torch.manual_seed(2)
    moe = MoEFeedForward(16, 32, experts=4, top_k=2, aux_loss_weight=0.01, router_noise=1.0)
    x = torch.randn(8, 5, 16)
    moe.train()
    moe(x)
    loss = moe.aux_loss(None)
    assert loss is not None and 0 < loss.item() < 0.05  # 0.01 at perfect balance
    moe.eval()
    moe(x)
    assert moe.aux_loss(None) is None
    stats = routing_stats(moe)
    assert sum(stats[f"moe.load.expert{i}"] for i in range(4)) == pytest.approx(1.0)
    assert "moe.load_cv" in stats
    assert inference_knobs(moe) == {"moe.eval_capacity_factor": 2.0}


@pytest.mark.parametrize("scorer", ["learned", "cls_attention"])
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_token_selection_matches_flop_counter_alone(scorer, keep):
    torch.manual_seed(3)
    layer = TransformerLayer(16, 4, mlp_ratio=2.0)
    model = torch.nn.Sequential(TokenSelection(16, keep_ratio=keep, scorer=scorer), layer).eval()
    x = torch.randn(30, 17, 16)
    assert_matches_alone(model, x)


def test_token_selection_keeps_cls_and_the_top_tokens_in_order():
    select = TokenSelection(4, keep_ratio=0.5).eval()
    h = torch.randn(2, 9, 4)
    out = select(h)
    assert out.shape == (2, 5, 4)
    torch.testing.assert_close(out[:, 0], h[:, 0])
    scores = select._scores(h)
    for b in range(2):
        top = scores[b].topk(4).indices.sort().values
        torch.testing.assert_close(out[b, 1:], h[b, 1:][top])
    assert routing_stats(select) == {"token_selection.kept_fraction": 0.5}


@pytest.mark.parametrize("scorer", ["learned", "cls_attention"])
def test_token_selection_keeps_the_same_tokens_in_eval_as_in_training(scorer):
    torch.manual_seed(0)
    select = TokenSelection(8, keep_ratio=0.3, scorer=scorer)
    h = torch.randn(5, 21, 8)
    with torch.no_grad():
        trained = select.train()(h)  # gather + the straight-through factor (1 going forward)
        evaluated = select.eval()(h)  # one row gather of CLS and the kept tokens
        alone = torch.cat([select(h[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(evaluated, trained)
    assert torch.equal(alone, evaluated)
    assert routing_stats(select) == {"token_selection.kept_fraction": 6 / 20}  # ceil(0.3 * 20)


def test_fewer_kept_tokens_cost_less_downstream():
    layer = TransformerLayer(16, 4, mlp_ratio=2.0)
    model = torch.nn.Sequential(TokenSelection(16, keep_ratio=1.0), layer).eval()
    x = torch.randn(3, 33, 16)
    _, full = per_sample_flops(model, x)
    set_inference_knobs(model, {"token_selection.keep_ratio": 0.25})
    _, quarter = per_sample_flops(model, x)
    assert (quarter < full / 2).all()
