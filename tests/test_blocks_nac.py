"""Neural Attentive Circuits: a kernel over module signatures wires the modules, codes make
shared weights module-specific, and dropping mediators at inference removes their work."""

import math

import pytest
import torch
from flop_checks import assert_matches_alone
from helpers import DIGITS_IO, SEQUENCE_IO

from condsearch.blocks import (
    inference_knobs,
    reset_routing_stats,
    routing_stats,
    set_inference_knobs,
)
from condsearch.blocks.nac import Circuit, ModFC, kernel_attention, module_distance
from condsearch.cost import per_sample_flops, reference_counter
from condsearch.data import load_task
from condsearch.models._nac import NAC
from condsearch.train import evaluate, fit

SMALL = {"dim": 16, "input_modules": 4, "mediators": 16, "layers": 2, "heads": 2,
         "signature_dim": 8, "code_dim": 8, "patch_size": 4}
RATIOS = [1.0, 1 / 2, 1 / 4, 1 / 8]


def nac(io=DIGITS_IO, **cfg) -> NAC:
    torch.manual_seed(0)
    return NAC({"backbone": "nac", "nac": {**SMALL, **cfg}}, io)


def inputs(io, n=6):
    torch.manual_seed(1)
    if io["input_kind"] == "image":
        return torch.rand(n, *io["input_shape"])
    return torch.randint(0, io["vocab_size"], (n, *io["input_shape"]))


def rows_seen(model: NAC, x: torch.Tensor) -> dict[str, int]:
    """How many module rows the first propagation layer's attention and FFN and the read-out
    attention computed on."""
    seen = {}
    circuit = model.circuit

    def record(name):
        def hook(module, args):
            seen[name] = args[0].shape[1]
            if name.endswith("attn"):
                seen[name + ".senders"] = args[1].shape[1]
        return hook

    handles = [circuit.layers[0].attn.register_forward_pre_hook(record("layer0.attn")),
               circuit.layers[0].ffn.register_forward_pre_hook(record("layer0.ffn")),
               circuit.read_out.attn.register_forward_pre_hook(record("read_out.attn"))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("io", [DIGITS_IO, SEQUENCE_IO], ids=["image", "tokens"])
@pytest.mark.parametrize("ratio", RATIOS, ids=["keep1", "keep1/2", "keep1/4", "keep1/8"])
def test_per_sample_flops_match_each_sample_alone_at_every_keep_ratio(io, ratio):
    model = nac(io).eval()
    set_inference_knobs(model, {"nac.keep_ratio": ratio})
    out, flops = assert_matches_alone(model, inputs(io))
    assert out.shape == (6, io["num_classes"])
    assert (flops > 0).all()


def test_flop_counter_mode_counts_the_first_forward_after_eval_with_grad_enabled():
    # the eval constants are built inside the counter on that forward; its module tracker
    # must see no input that wants a gradient there
    model = nac().eval()
    with reference_counter() as counter:
        model(inputs(DIGITS_IO, n=1))
    assert counter.get_total_flops() > 0


def test_dropping_mediators_cuts_flops_and_keeps_fewer_rows():
    model = nac().eval()
    x = inputs(DIGITS_IO)
    flops, rows = [], []
    for ratio in RATIOS:
        set_inference_knobs(model, {"nac.keep_ratio": ratio})
        flops.append(per_sample_flops(model, x)[1].mean().item())
        rows.append(rows_seen(model, x))
    assert flops == sorted(flops, reverse=True)
    assert flops[-1] < 0.5 * flops[0]
    # 16 mediators: keep 1, 1/2, 1/4, 1/8 run 16, 8, 4, 2 of them; 4 input modules always send.
    assert [r["layer0.ffn"] for r in rows] == [16, 8, 4, 2]
    assert [r["layer0.attn"] for r in rows] == [16, 8, 4, 2]
    assert [r["layer0.attn.senders"] for r in rows] == [20, 12, 8, 6]
    assert [r["read_out.attn.senders"] for r in rows] == [21, 13, 9, 7]  # + the output module


def test_in_training_every_mediator_runs_whatever_the_keep_ratio():
    model = nac(keep_ratio=1 / 8).train()
    assert rows_seen(model, inputs(DIGITS_IO))["layer0.ffn"] == 16
    assert rows_seen(model.eval(), inputs(DIGITS_IO))["layer0.ffn"] == 2


def test_keeping_every_mediator_in_eval_computes_what_training_computes():
    model = nac()
    x = inputs(DIGITS_IO)
    with torch.no_grad():
        trained = model.train()(x)
        evaluated = model.eval()(x)
    torch.testing.assert_close(evaluated, trained)


@pytest.mark.parametrize("readout_inputs", [True, False])
def test_kept_mediators_are_those_the_output_hears_most_and_nest_as_the_ratio_shrinks(
        readout_inputs):
    circuit = nac(readout_inputs=readout_inputs).circuit.eval()
    direct, two_hop = circuit.mediator_importance()
    with torch.no_grad():
        k = circuit.kernel()
    heard = (k[-1, 4:20] > 0).nonzero().flatten()  # mediators sit at 4..19, the output at 20
    assert torch.equal((direct > 0).nonzero().flatten(), heard)
    kept = {}
    for ratio in RATIOS:
        circuit.set_inference_knobs(keep_ratio=ratio)
        kept[ratio] = set(circuit.kept_mediators().tolist())
        assert len(kept[ratio]) == math.ceil(ratio * 16)
        dropped = sorted(set(range(16)) - kept[ratio])
        for v in dropped:  # a dropped mediator never outranks a kept one
            for u in kept[ratio]:
                assert (direct[u], two_hop[u]) >= (direct[v], two_hop[v])
    assert kept[1 / 8] <= kept[1 / 4] <= kept[1 / 2] <= kept[1.0]


def test_without_readout_inputs_the_output_hears_only_mediators_and_itself():
    model = nac(readout_inputs=False).eval()
    assert rows_seen(model, inputs(DIGITS_IO))["read_out.attn.senders"] == 16 + 1
    set_inference_knobs(model, {"nac.keep_ratio": 1 / 4})
    assert rows_seen(model, inputs(DIGITS_IO))["read_out.attn.senders"] == 4 + 1
    assert_matches_alone(model, inputs(DIGITS_IO))


def test_kernel_is_zero_exactly_where_the_signature_distance_reaches_tau():
    circuit = nac(tau=0.8).circuit
    with torch.no_grad():
        k = circuit.kernel()
        d = module_distance(circuit.signatures)
        b = circuit.bandwidth
    assert torch.equal(k == 0, d >= 0.8)
    assert (k.diagonal() == 1).all()  # every module is linked to itself
    torch.testing.assert_close(k[d < 0.8], torch.exp(-d[d < 0.8] / b))


def test_lowering_tau_never_reduces_sparsity():
    circuit = nac().circuit
    sparsity = []
    for tau in [2.0, 1.5, 1.2, 1.0, 0.9, 0.6, 0.3, 0.05]:
        circuit.tau = tau
        sparsity.append(circuit.kernel_sparsity())
    assert sparsity == sorted(sparsity)
    assert sparsity[0] < 0.05 and sparsity[-1] > 0.95


def test_a_receiver_cut_off_from_every_sender_but_itself_attends_only_to_itself():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 5, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    only_self = torch.full((5, 5), float("-inf")).fill_diagonal_(0.0)
    torch.testing.assert_close(kernel_attention(q, k, v, 2, only_self), v)
    assert not torch.allclose(kernel_attention(q, k, v, 2, None), v)


@pytest.mark.parametrize("masked", [True, False])
def test_kernel_attention_of_one_sample_matches_the_fused_kernel(masked):
    torch.manual_seed(0)
    q = torch.randn(1, 5, 8)
    kv = torch.randn(1, 7, 16)  # k and v as strided halves of one projection, as in a circuit
    k, v = kv.chunk(2, dim=-1)
    mask = torch.randn(5, 7) if masked else None
    with torch.no_grad():
        alone = kernel_attention(q, k, v, 2, mask)
        fused = kernel_attention(q.expand(2, 5, 8), k.expand(2, 7, 8), v.expand(2, 7, 8), 2,
                                 mask)[:1]  # batch 2 takes scaled_dot_product_attention
    torch.testing.assert_close(alone, fused)


def test_a_batch_and_its_samples_one_at_a_time_give_the_same_outputs():
    model = nac(keep_ratio=0.5).eval()
    x = inputs(DIGITS_IO)
    with torch.no_grad():
        batched = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(alone, batched)


def test_a_circuit_whose_kernel_cuts_every_link_gives_every_input_the_same_output():
    x = inputs(DIGITS_IO)
    with torch.no_grad():
        cut = nac(tau=1e-4).eval()(x)  # no module hears the input modules
        linked = nac(tau=2.0).eval()(x)
    torch.testing.assert_close(cut, cut[:1].expand_as(cut))
    assert not torch.allclose(linked, linked[:1].expand_as(linked))


def test_modfc_shares_its_weights_but_computes_a_different_function_per_code():
    torch.manual_seed(0)
    fc = ModFC(8, 4, code_dim=3)
    codes = torch.randn(2, 3)
    x = torch.randn(5, 1, 8).expand(5, 2, 8)  # the same input for both modules
    y = fc(x, fc.code_scale(codes))
    assert not torch.allclose(y[:, 0], y[:, 1])
    same = fc(x, fc.code_scale(codes[:1].expand(2, 3)))
    torch.testing.assert_close(same[:, 0], same[:, 1])
    assert sum(p.numel() for p in fc.parameters()) == 8 * 4 + 4 + 3 * 8  # whatever the modules


def test_keep_ratio_is_the_inference_knob_and_is_checked():
    model = nac(keep_ratio=0.5)
    assert inference_knobs(model) == {"nac.keep_ratio": 0.5}
    set_inference_knobs(model, {"nac.keep_ratio": 0.25})
    assert model.circuit.inference_knobs() == {"keep_ratio": 0.25}
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="keep_ratio"):
            set_inference_knobs(model, {"nac.keep_ratio": bad})
        with pytest.raises(ValueError, match="keep_ratio"):
            nac(keep_ratio=bad)
    with pytest.raises(KeyError, match="unknown inference knobs"):
        set_inference_knobs(model, {"nac.tau": 0.5})
    with pytest.raises(KeyError):
        model.circuit.set_inference_knobs(tau=0.5)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="unknown nac settings"):
        nac(modules=8)
    with pytest.raises(ValueError, match="tau"):
        nac(tau=0.0)
    with pytest.raises(ValueError, match="divisible"):
        nac(heads=3)


def test_routing_stats_report_sparsity_and_the_mediators_that_run():
    model = nac(keep_ratio=0.25).eval()
    reset_routing_stats(model)
    assert routing_stats(model) == {}
    with torch.no_grad():
        model(inputs(DIGITS_IO))
    stats = routing_stats(model)
    assert set(stats) == {"nac.kernel_sparsity", "nac.active_mediators", "nac.kernel_mean_degree"}
    assert stats["nac.active_mediators"] == 4
    assert stats["nac.kernel_sparsity"] == model.circuit.kernel_sparsity()
    assert 1 <= stats["nac.kernel_mean_degree"] <= 4 + 4  # itself at least; inputs + kept at most


def test_eval_constants_follow_the_weights():
    model = nac().eval()
    x = inputs(DIGITS_IO)
    with torch.no_grad():
        before = model(x)
        model.circuit.signatures.mul_(-1.0).add_(0.3)  # an in-place update, as an optimizer does
        model.circuit.codes.add_(0.5)
        after = model(x)
        fresh = model.train()(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh)


def test_eval_constants_follow_the_shared_weights_and_edits_through_data():
    model = nac().eval()
    x = inputs(DIGITS_IO)
    fc = model.circuit.layers[0].ffn.fc1.linear  # its transposed weight is an eval constant
    with torch.no_grad():
        before = model(x)
        fc.weight.mul_(2.0)
        after = model(x)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, model.train()(x))
        model.eval()(x)
        fc.weight.data.mul_(0.5)  # bumps no version: seen once the mode is set again
        torch.testing.assert_close(model.eval()(x), before)


def test_a_circuit_takes_tokens_and_returns_the_output_module_state():
    circuit = Circuit(16, input_modules=2, mediators=4, layers=1, heads=2, signature_dim=4,
                      code_dim=4).eval()
    with torch.no_grad():
        assert circuit(torch.randn(3, 7, 16)).shape == (3, 16)


def test_a_short_training_on_digits_learns_and_reports_nac_statistics():
    task = load_task({"dataset": "digits"})
    torch.manual_seed(0)
    model = NAC({"backbone": "nac", "nac": {"dim": 32, "input_modules": 4, "mediators": 8,
                                            "layers": 2, "signature_dim": 8, "code_dim": 16}},
                task.info())
    fit(model, task, {"epochs": 3, "batch_size": 32, "lr": 3e-3}, device=torch.device("cpu"),
        seed=0)
    result = evaluate(model, task, "val")
    assert result.accuracy > 0.6  # chance is 0.1
    assert result.stats["nac.active_mediators"] == 8
    assert {"nac.kernel_sparsity", "nac.kernel_mean_degree"} <= set(result.stats)
