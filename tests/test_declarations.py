"""Each built-in component and backbone is declared once (condsearch/space/declared/): the
schema, the sweep knobs, the NNI key table, the parameter formula and the builders all follow
those declarations, and no builder or trainer keeps a default of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from condsearch.blocks import inference_knobs
from condsearch.interop._nni_format import KEY_SPECS
from condsearch.models import build_model
from condsearch.space import (
    BUILTIN_BACKBONES,
    BUILTIN_COMPONENTS,
    SWEEP_KNOBS,
    TRAIN_PARAMS,
    find_backbone,
    known_names,
)
from condsearch.space.declared.token_transformer import param_count

PACKAGE = Path(__file__).resolve().parents[1] / "condsearch"
DIGITS = {"input_kind": "image", "input_shape": [1, 8, 8], "num_classes": 10, "vocab_size": None}
#: a constant a dict literal could hold as a default: a number, a flag, a name, a list of numbers
LITERAL = r"(-?[\d.]+(e-?\d+)?|True|False|None|\[[\d.,\s]*\]|'[^']*'|\"[^\"]*\")\s*[,}\n]"
PARITY = {"input_kind": "sequence", "input_shape": [12], "num_classes": 2, "vocab_size": 3}


def declared_keys() -> set[str]:
    keys = set(TRAIN_PARAMS)
    for thing in (*BUILTIN_COMPONENTS.values(), *BUILTIN_BACKBONES.values(),
                  find_backbone("conv_net")):
        keys |= set(thing.params)
    return keys


def test_no_builder_or_trainer_holds_a_second_default_for_a_declared_key():
    second = []
    for folder in ("models", "train"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            text = path.read_text()
            for key in declared_keys():
                for pattern in (rf"\.get\(\s*['\"]{key}['\"]\s*,", rf"['\"]{key}['\"]\s*:\s*{LITERAL}"):
                    for match in re.finditer(pattern, text, flags=re.M):
                        line = text.count("\n", 0, match.start()) + 1
                        second.append(f"{path.relative_to(PACKAGE)}:{line}: {key}")
    assert not second, "defaults outside the declarations:\n" + "\n".join(second)


def test_the_nni_key_table_is_the_declarations():
    expected = {f"train.{k}": s for k, s in TRAIN_PARAMS.items()}
    for backbone in (*BUILTIN_BACKBONES.values(), find_backbone("conv_net")):
        expected.update({backbone.param_name(k): s for k, s in backbone.params.items()})
    for comp in BUILTIN_COMPONENTS.values():
        expected.update({f"model.components.{comp.name}.{k}": s for k, s in comp.params.items()})
    table = {k: v for k, v in KEY_SPECS.items() if k != "model.backbone"}
    assert table == expected
    assert set(KEY_SPECS["model.backbone"].values) == {*BUILTIN_BACKBONES, "conv_net"}


def test_every_sweep_knob_is_a_declared_key_of_its_owner():
    for knob in SWEEP_KNOBS:
        owner, key = knob.split(".", 1)
        thing = BUILTIN_COMPONENTS.get(owner) or next(
            b for b in BUILTIN_BACKBONES.values() if b.section == owner)
        assert key in thing.params and key in thing.knobs


@pytest.mark.parametrize("name", list(BUILTIN_COMPONENTS))
def test_a_components_declared_knobs_are_those_its_block_exposes(name):
    depth = 3
    components = {name: {"enabled": True}}
    model = {"backbone": "token_transformer", "dim": 16, "depth": depth, "heads": 2,
             "components": components}
    built = build_model({"model": model}, PARITY)
    prefix = f"{name}."
    exposed = {k[len(prefix):] for k in inference_knobs(built) if k.startswith(prefix)}
    assert exposed == set(BUILTIN_COMPONENTS[name].knobs)


@pytest.mark.parametrize("name, section", [("cigt", {"widths": [1, 2]}), ("nac", {"mediators": 4})])
def test_a_backbones_declared_knobs_are_those_its_model_exposes(name, section):
    built = build_model({"model": {"backbone": name, name: section}}, DIGITS)
    exposed = {k.split(".", 1)[1] for k in inference_knobs(built) if k.startswith(f"{name}.")}
    assert exposed == set(BUILTIN_BACKBONES[name].knobs)


@pytest.mark.parametrize("components", [
    {}, {"early_exit": {"enabled": True, "every": 1}},
    {"moe": {"enabled": True, "experts": 3}, "token_selection": {"enabled": True}},
    {"adatape": {"enabled": True, "bank": "input", "max_tape": 3}},
])
def test_the_parameter_formula_follows_the_declared_defaults(components):
    model = {"backbone": "token_transformer", "dim": 16, "depth": 2, "components": components}
    built = build_model({"model": model}, DIGITS)
    assert param_count(model, DIGITS) == sum(p.numel() for p in built.parameters())


def test_conv_net_enters_through_the_public_entry_point():
    decl = find_backbone("conv_net")
    assert decl.origin == "entry point" and decl.hosts == ("early_exit",)
    assert "conv_net" in known_names() and "conv_net" not in BUILTIN_BACKBONES


def test_a_model_section_missing_a_required_key_names_it():
    with pytest.raises(ValueError, match="model: depth missing"):
        build_model({"model": {"backbone": "token_transformer", "dim": 16}}, DIGITS)


def test_a_component_no_backbone_of_the_space_hosts_is_pointed_at():
    from condsearch.space import SpaceError, parse_space

    text = ("name: x\ntask: {dataset: digits}\nmodel:\n  backbone: conv_net\n  components:\n"
            "    moe: {enabled: true}\n")
    with pytest.raises(SpaceError) as caught:
        parse_space(text, "s.yaml")
    assert str(caught.value) == ("s.yaml:6: model.components.moe: no backbone of this space "
                                 "hosts moe (conv_net hosts early_exit)")
