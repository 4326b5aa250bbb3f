"""The token transformer with its components switched on from an arch dict: exact per-sample
FLOPs, knobs reachable by name, and each component really changing what runs."""

import pytest
import torch
from flop_checks import assert_matches_alone
from helpers import DIGITS_IO, SEQUENCE_IO

from condsearch.blocks import (
    AdaTape,
    MoEFeedForward,
    TokenSelection,
    inference_knobs,
    set_inference_knobs,
)
from condsearch.cost import per_sample_flops
from condsearch.models import build_model


def model_with(io, components, depth=4, seed=0):
    torch.manual_seed(seed)
    arch = {"model": {"backbone": "token_transformer", "dim": 16, "depth": depth, "heads": 4,
                      "patch_size": 2, "components": components}}
    model = build_model(arch, io).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.3)  # decisive routers and exits, so samples take different paths
    return model


def inputs(io, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    if io["input_kind"] == "image":
        return torch.randn(n, *io["input_shape"], generator=g)
    return torch.randint(0, io["vocab_size"], (n, *io["input_shape"]), generator=g)


def test_moe_token_selection_and_early_exit_combine_with_exact_per_sample_flops():
    model = model_with(DIGITS_IO, {
        "moe": {"enabled": True, "experts": 4, "top_k": 2, "eval_capacity_factor": 0.75},
        "token_selection": {"enabled": True, "keep_ratio": 0.5, "scorer": "cls_attention"},
        "early_exit": {"enabled": True, "every": 1, "threshold": 0.35},
    })
    assert sum(isinstance(m, MoEFeedForward) for m in model.modules()) == 2  # layers 2 and 4
    assert sum(isinstance(m, TokenSelection) for m in model.modules()) == 1  # before layer 3
    assert set(inference_knobs(model)) == {"early_exit.threshold", "moe.eval_capacity_factor",
                                           "token_selection.keep_ratio"}
    flops = assert_matches_alone(model, inputs(DIGITS_IO, 60))[1]
    assert len(set(flops.tolist())) > 1


@pytest.mark.parametrize("bank", ["learned", "input"])
def test_adatape_in_the_transformer_reads_tapes_of_different_lengths_exactly_counted(bank):
    model = model_with(SEQUENCE_IO, {"adatape": {"enabled": True, "bank": bank, "bank_size": 12,
                                                 "max_tape": 4, "tokens_per_step": 3, "theta": 1.4,
                                                 "insert_after": 1},
                                     "moe": {"enabled": True, "experts": 2}}, depth=2)
    tape = next(m for m in model.modules() if isinstance(m, AdaTape))
    with torch.no_grad():
        tape.norm.weight.fill_(3.0)  # sharper scores, so halting differs between samples
    x = inputs(SEQUENCE_IO, 60)
    for theta in torch.arange(1.05, 3.5, 0.05).tolist():  # a budget at which tape lengths differ
        set_inference_knobs(model, {"adatape.theta": theta})
        if len(set(per_sample_flops(model, x)[1].tolist())) > 1:
            break
    flops = assert_matches_alone(model, x)[1]
    assert len(set(flops.tolist())) > 1, "samples should read tapes of different lengths"
    assert set(inference_knobs(model)) == {"adatape.theta", "moe.eval_capacity_factor"}


def test_a_lower_keep_ratio_costs_less_on_the_same_weights():
    model = model_with(DIGITS_IO, {"token_selection": {"enabled": True, "keep_ratio": 1.0}})
    x = inputs(DIGITS_IO, 8)
    full = per_sample_flops(model, x)[1].mean()
    set_inference_knobs(model, {"token_selection.keep_ratio": 0.25})
    assert per_sample_flops(model, x)[1].mean() < full


def test_adatape_refuses_to_share_the_trunk_with_early_exit():
    with pytest.raises(ValueError, match="adatape cannot be combined with early_exit"):
        model_with(DIGITS_IO, {"adatape": {"enabled": True}, "early_exit": {"enabled": True}})
