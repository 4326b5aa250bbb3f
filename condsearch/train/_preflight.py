"""A candidate's checks before it trains: parameters, training memory and (for a static network)
FLOPs against the trial's limits, so an impossible candidate fails in milliseconds with its reason.

The estimates use the constants validation uses (`condsearch.space._bounds`): parameters come
from the backbone's formula, else from building the model on the meta device (nothing allocated);
activations from one forward pass of a few real samples on a copy of the model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from condsearch.space._bounds import (
    ACTIVATION_BYTES,
    TrialLimits,
    gb,
    memory_limit,
    training_bytes,
)

#: samples the activation measurement runs (per-sample activations are their mean)
MEASURE_SAMPLES = 8


class CandidateTooCostly(Exception):
    """The candidate breaks a limit of its trial before training: the message says which."""


def device_memory(device: torch.device) -> tuple[int | None, str]:
    """(total bytes, what it is) of the memory a trial on `device` trains in."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"CUDA device {index}"
    return None, "this machine"


def _params_of(arch: dict[str, Any], io: dict[str, Any]) -> int:
    """Trainable parameters without allocating: the backbone's formula, else a meta build."""
    from condsearch.models import backbone_of, build_model
    from condsearch.models._build import complete_model

    decl = backbone_of(arch)
    if decl.param_count is not None:
        return int(decl.param_count(complete_model(arch["model"], decl), io))
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build_model(arch, io)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_before_build(arch: dict[str, Any], io: dict[str, Any], batch_size: int,
                       limits: TrialLimits, device: torch.device) -> int:
    """The candidate's parameter count, after checking it against `max_params` and the memory
    its weights, gradients and optimizer state take against the memory limit."""
    params = _params_of(arch, io)
    if limits.max_params is not None and params > limits.max_params:
        raise CandidateTooCostly(f"{params:,} parameters, more than constraints.max_params = "
                                 f"{limits.max_params:,.0f} (checked before building)")
    limit, how = memory_limit(limits.max_memory_gb, *device_memory(device))
    need = training_bytes(params, 0, batch_size)
    if need > limit:
        raise CandidateTooCostly(f"{params:,} parameters need about {gb(need)} to train, more "
                                 f"than the {gb(limit)} limit ({how}) (checked before building)")
    return params


def activations_per_sample(probe: nn.Module, x: torch.Tensor) -> float:
    """Bytes the forward pass keeps for backward, per sample; it runs `probe` (a copy of the
    model: its state changes) in training mode, leaving the random streams as they were."""
    probe = probe.train()
    weights = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in weights and ptr not in seen:
            seen.add(ptr)
            total += tensor.untyped_storage().nbytes()
        return tensor

    with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(
            pack, lambda t: t):
        probe(x)
    return total / len(x)


def _static_flops(probe: nn.Module, x: torch.Tensor) -> float | None:
    """Per-sample FLOPs when the network does the same work for every input (no adaptive block,
    no inference knob, the same count on each sample), else None: only then do they bound the
    trained model's cost before training. `probe`, a copy of the model, goes to eval mode."""
    from condsearch.blocks import inference_knobs
    from condsearch.blocks._protocol import adaptive_blocks
    from condsearch.cost import per_sample_flops

    if adaptive_blocks(probe) or inference_knobs(probe):
        return None
    probe.eval()
    with torch.random.fork_rng(devices=[]):
        _, flops = per_sample_flops(probe, x)
    return float(flops[0]) if bool((flops == flops[0]).all()) else None


def check_built(model: nn.Module, x: torch.Tensor, params: int, batch_size: int,
                limits: TrialLimits, device: torch.device) -> None:
    """Check the built model's training memory (parameters and a batch's activations) and, for
    a static network, its FLOPs against `max_flops`; `x` holds a few real samples."""
    x = x[:MEASURE_SAMPLES].to(device)
    limit, how = memory_limit(limits.max_memory_gb, *device_memory(device))
    # one copy on the device for both measurements: the model stays as built, where it was built
    probe = copy.deepcopy(model).to(device)
    per_sample = activations_per_sample(probe, x)
    need = training_bytes(params, per_sample / ACTIVATION_BYTES, batch_size)
    if need > limit:
        raise CandidateTooCostly(
            f"about {gb(need)} to train at batch {batch_size} ({params:,} parameters, "
            f"{per_sample / 1e6:,.1f} MB of activations a sample), more than the {gb(limit)} "
            f"limit ({how}) (checked before training)")
    if limits.max_flops is not None:
        flops = _static_flops(probe, x)
        if flops is not None and flops > limits.max_flops:
            raise CandidateTooCostly(f"{flops:,.0f} FLOPs a sample, more than "
                                     f"constraints.max_flops = {limits.max_flops:,.0f} "
                                     "(a static network: checked before training)")
