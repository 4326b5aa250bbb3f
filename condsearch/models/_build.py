"""build_model: the one entry point from an arch dict to a module, whatever the backbone."""

from __future__ import annotations

from typing import Any

from torch import nn

from condsearch.blocks import set_inference_knobs
from condsearch.space import (
    BUILTIN_COMPONENTS,
    Backbone,
    BackboneUnavailable,
    complete,
    factory_of,
    find_backbone,
)


def _io(task: Any) -> dict[str, Any]:
    return task.info() if hasattr(task, "info") else dict(task)


class UntrustedBackbone(BackboneUnavailable):
    """The backbone is reachable only through an import path (code), which was not trusted."""

    def __init__(self, path: str) -> None:
        super().__init__(f"the backbone {path!r} is an import path (code) and is imported only "
                         "when trusted (trust_code=True)")
        self.path = path


def backbone_of(arch: dict[str, Any], trust_code: bool = True) -> Backbone:
    """The declaration of the arch's backbone: by name, or else by the factory's import path
    that an export recorded (`arch["factory"]`). Raises BackboneUnavailable.

    A name (built-in, registered in this process, an installed entry point) always resolves;
    an import path, the arch's or the recorded `factory`, is imported only when `trust_code`,
    else UntrustedBackbone (a BackboneUnavailable) names it and nothing is imported."""
    name = arch["model"]["backbone"]
    try:
        decl = find_backbone(name, trust_code=trust_code)
    except BackboneUnavailable:
        recorded = arch.get("factory")
        if not recorded or recorded == name:
            raise
        name = recorded
        decl = find_backbone(recorded, trust_code=trust_code)
    if decl is None:
        raise UntrustedBackbone(name)
    return decl


def complete_model(model: dict[str, Any], decl: Backbone) -> dict[str, Any]:
    """The model section with every key its backbone and hosted components declare: the one
    place defaults come from, so builders read values, never defaults of their own."""
    if decl.section is None:
        out = complete(decl.params, model)
    else:
        out = {**model, decl.section: complete(decl.params, model.get(decl.section))}
    missing = [k for k, spec in decl.params.items() if spec.required and (
        (out if decl.section is None else out[decl.section]).get(k) is None)]
    if missing:
        where = "model" if decl.section is None else f"model.{decl.section}"
        raise ValueError(f"{where}: {', '.join(missing)} missing (required by {decl.name})")
    if decl.hosts:
        given = model.get("components") or {}
        out["components"] = {c: complete(BUILTIN_COMPONENTS[c].params, given.get(c))
                             for c in decl.hosts}
    return out


def build_model(arch: dict[str, Any], task: Any, trust_code: bool = True) -> nn.Module:
    """Build the model an arch dict describes, for a task (a Task or its `info()` dict).

    Only `arch["model"]`, `arch["inference"]` (knob settings, when present) and `arch["factory"]`
    (the import path an export records for a backbone that is not built in) are read.
    `trust_code=False` builds only a backbone known by name (see `backbone_of`).
    """
    decl = backbone_of(arch, trust_code)
    model = factory_of(decl)(complete_model(arch["model"], decl), _io(task))
    if not isinstance(model, nn.Module):
        raise TypeError(f"the factory of backbone {decl.name!r} returned "
                        f"{type(model).__name__}, not a torch.nn.Module")
    if arch.get("inference"):
        set_inference_knobs(model, arch["inference"])
    return model
