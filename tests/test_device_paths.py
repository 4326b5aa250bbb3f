"""The code paths that differ on a GPU, run on the device `CONDSEARCH_TEST_DEVICE` names (`cpu`
or `cuda`).

CI runs them on the CPU (the default); `experiments/gpu/run.sh` runs them with
`CONDSEARCH_TEST_DEVICE=cuda`, where the device selection, bf16 autocast in training (a fit, a
whole trial, a training step of every block), and the per-sample FLOPs counting all meet CUDA
tensors. On `cuda` without a visible GPU the tests that need the device skip with a reason.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext

import pytest
import torch
from flop_checks import assert_matches_alone
from helpers import DIGITS_IO
from torch import nn

from condsearch.blocks.early_exit import certainty
from condsearch.data import load_task
from condsearch.models import build_model
from condsearch.orchestrate._trial import TrialSpec, run_trial
from condsearch.train import fit, select_device, training_loss

DEVICE = os.environ.get("CONDSEARCH_TEST_DEVICE", "cpu")
TASK = {"dataset": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2,
        "train_limit": 300}


@pytest.fixture
def device():
    """The device under test; skips when it is CUDA and this process sees no GPU."""
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"CONDSEARCH_TEST_DEVICE={DEVICE} but no CUDA device is visible")
    return torch.device(DEVICE)


@pytest.fixture
def exact_math(device):
    """Full fp32 matmuls and convolutions on CUDA (no TF32) while the test runs: the FLOPs
    checks compare routing decisions of a batch with those of each sample alone, and TF32's
    rounding could move a sample across a threshold. The counting itself is what is tested."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield device
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def arch(device: torch.device, **train) -> dict:
    """A small early-exit transformer with MoE MLPs, trained for a few epochs on `device`."""
    components = {"early_exit": {"enabled": True, "every": 1, "threshold": 0.9},
                  "moe": {"enabled": True, "experts": 4, "top_k": 2, "every": 2}}
    return {"model": {"backbone": "token_transformer", "dim": 16, "depth": 2, "heads": 4,
                      "patch_size": 4, "components": components},
            "train": {"epochs": 6, "batch_size": 32, "lr": 5e-3, "eval_batch_size": 64,
                      "device": str(device), **train}}


# ---- device selection ---------------------------------------------------------------------------


def test_auto_takes_the_gpu_when_one_is_visible_else_the_cpu(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")


def test_an_explicit_device_is_taken_as_named(device):
    assert select_device(str(device)) == device
    assert select_device("cpu") == torch.device("cpu")


def test_cuda_is_refused_without_a_gpu_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="train.device is 'cuda' but no CUDA device is visible"):
        select_device("cuda")


# ---- training in bf16 ---------------------------------------------------------------------------


def _fit_recording_dtypes(device: torch.device, precision: str) -> tuple[list[dict], set, nn.Module]:
    """Fit the small model; also the dtypes its first linear layer produced in training."""
    task = load_task(TASK)
    torch.manual_seed(0)
    model = build_model(arch(device), task)
    seen: set[torch.dtype] = set()
    layer = next(m for m in model.modules() if isinstance(m, nn.Linear))
    layer.register_forward_hook(
        lambda mod, _inputs, out: seen.add(out.dtype) if mod.training else None)
    history = fit(model, task, arch(device, precision=precision)["train"], device=device, seed=0)
    return history, seen, model


def test_bf16_autocasts_on_cuda_and_trains_in_fp32_elsewhere_saying_so(device):
    if device.type == "cuda":
        history, seen, model = _fit_recording_dtypes(device, "bf16")
    else:
        with pytest.warns(UserWarning, match="bf16 applies on CUDA only"):
            history, seen, model = _fit_recording_dtypes(device, "bf16")
    assert len(history) == 6
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.3  # 10 classes: well above chance after 6 epochs
    assert {p.device.type for p in model.parameters()} == {device.type}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast keeps fp32 weights
    if device.type == "cuda":
        assert seen == {torch.bfloat16}
    else:
        # bf16 autocast is CUDA-only: elsewhere the same fit as fp32, step for step
        assert seen == {torch.float32}
        fp32_history, _, _ = _fit_recording_dtypes(device, "fp32")
        assert history == fp32_history


def test_a_whole_trial_trains_and_measures_on_the_device_in_bf16(device):
    spec = TrialSpec(number=0, arch=arch(device, precision="bf16"), task=TASK, seed=0,
                     sweep={"early_exit.threshold": [0.5, 0.99]})
    with (nullcontext() if device.type == "cuda" else
          pytest.warns(UserWarning, match="bf16 applies on CUDA only")):
        result = run_trial(spec)
    assert result.ok, result.error
    assert torch.device(result.device).type == device.type
    assert {"accuracy", "flops", "params", "latency_ms"} <= set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert result.metrics["accuracy"] > 0.3 and result.metrics["flops"] > 0
    low, high = result.derived
    assert low.knobs == {"early_exit.threshold": 0.5}
    assert low.metrics["flops"] <= result.metrics["flops"] <= high.metrics["flops"]


IMAGE_IO = {"input_kind": "image", "input_shape": [1, 28, 28], "num_classes": 10,
            "vocab_size": None}


def _transformer(components: dict) -> dict:
    return {"model": {"backbone": "token_transformer", "dim": 32, "depth": 4, "heads": 4,
                      "patch_size": 7, "components": components}}


BLOCKS = [
    pytest.param(_transformer({}), id="dense"),
    pytest.param(_transformer({"early_exit": {"enabled": True, "every": 1}}), id="early_exit"),
    pytest.param(_transformer({"moe": {"enabled": True, "experts": 4, "top_k": 2, "every": 1}}),
                 id="moe"),
    pytest.param(_transformer({"token_selection": {"enabled": True, "keep_ratio": 0.5}}),
                 id="token_selection"),
    pytest.param(_transformer({"adatape": {"enabled": True, "bank": "learned", "bank_size": 32,
                                           "max_tape": 4, "tokens_per_step": 2}}),
                 id="adatape"),
    pytest.param({"model": {"backbone": "cigt", "cigt": {"widths": [1, 2, 4], "channels": 16}}},
                 id="cigt"),
    pytest.param({"model": {"backbone": "nac", "nac": {"dim": 32, "mediators": 16,
                                                        "layers": 2}}}, id="nac"),
    pytest.param({"model": {"backbone": "conv_net",
                            "components": {"early_exit": {"enabled": True}}}}, id="conv_net"),
]


@pytest.mark.parametrize("model_arch", BLOCKS)
def test_every_block_takes_a_training_step_under_bf16_autocast(device, model_arch):
    """What `fit` runs with `precision: bf16` on CUDA, for each block. On the CPU, where `fit`
    does not autocast, the CPU's bf16 autocast stands in: it casts the same matmuls and
    convolutions, so a block that mixes dtypes fails here before it fails on a GPU."""
    torch.manual_seed(0)
    model = build_model(model_arch, IMAGE_IO).to(device).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (32,), generator=g).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = training_loss(model, x, y)
    loss.backward()
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


# ---- per-sample FLOPs of tensors on the device --------------------------------------------------


def _inputs(n: int, seed: int, device: torch.device) -> torch.Tensor:
    return torch.randn(n, *DIGITS_IO["input_shape"],
                       generator=torch.Generator().manual_seed(seed)).to(device)


def test_early_exit_flops_on_the_device_match_the_counter_alone(exact_math):
    device = exact_math
    torch.manual_seed(0)
    exits = {"enabled": True, "positions": [1, 2, 3], "criterion": "confidence",
             "threshold": 0.5}
    model = build_model({"model": {"backbone": "token_transformer", "dim": 32, "depth": 4,
                                   "heads": 4, "patch_size": 2,
                                   "components": {"early_exit": exits}}}, DIGITS_IO)
    for p in model.parameters():
        p.data.normal_(0, 0.3)  # random but decisive heads, so certainties spread out
    model.to(device)
    x = _inputs(100, 0, device)
    model.train()
    with torch.no_grad():
        model(x)
    first = certainty(model.trunk._train_exit_logits[0], "confidence").sort().values
    model.eval()
    model.trunk.threshold = float(first[49] + first[50]) / 2  # about half leave at the first exit
    out, flops = assert_matches_alone(model, x)
    assert out.device.type == device.type
    assert flops.shape == (100,) and flops.unique().numel() > 1  # samples left at different depths


def test_moe_flops_on_the_device_match_the_counter_alone(exact_math):
    device = exact_math
    torch.manual_seed(0)
    # capacity for every token (E x the fair share): a sample alone drops no token either
    moe = {"enabled": True, "experts": 4, "top_k": 2, "every": 1, "eval_capacity_factor": 4.0}
    model = build_model({"model": {"backbone": "token_transformer", "dim": 32, "depth": 2,
                                   "heads": 4, "patch_size": 2, "components": {"moe": moe}}},
                        DIGITS_IO).to(device).eval()
    x = _inputs(64, 1, device)
    out, flops = assert_matches_alone(model, x)
    assert out.device.type == device.type
    assert flops.shape == (64,) and bool((flops > 0).all())
