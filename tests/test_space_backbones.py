"""Backbones in a search space: a fixed one or a choice, each with its own keys, checked by file:line."""

import optuna
import pytest
import yaml
from helpers import problems, sampled

from condsearch.space import parse_space

JOINT = """\
name: joint
task: {dataset: digits}
model:
  backbone: {choice: [token_transformer, cigt, nac]}
  dim: {choice: [16, 32]}
  depth: 2
  patch_size: 4
  components:
    early_exit: {enabled: {choice: [true, false]}}
  cigt:
    widths: {choice: [[1, 2, 4], [1, 2, 2]]}
    channels: {int: [8, 16]}
  nac:
    mediators: {int: [8, 16]}
    patch_size: 4
sweep:
  early_exit.threshold: [0.5, 0.9]
  cigt.multipath_threshold: [0.3]
  nac.keep_ratio: [0.5, 0.25]
"""


def test_a_backbone_choice_samples_only_the_picked_backbones_keys():
    results = sampled(parse_space(JOINT), n=40)
    by_backbone = {}
    for params, arch in results:
        by_backbone.setdefault(arch["model"]["backbone"], []).append((params, arch))
    assert set(by_backbone) == {"token_transformer", "cigt", "nac"}
    for params, arch in by_backbone["cigt"]:
        assert set(arch["model"]) == {"backbone", "cigt"}
        assert arch["model"]["cigt"]["widths"] in ([1, 2, 4], [1, 2, 2])
        assert 8 <= arch["model"]["cigt"]["channels"] <= 16
        assert arch["model"]["cigt"]["multipath_threshold"] == 1.0  # defaults filled
        assert not [k for k in params if k.startswith(("model.nac.", "model.dim", "model.components"))]
    for params, arch in by_backbone["nac"]:
        assert set(arch["model"]) == {"backbone", "nac"}
        assert arch["model"]["nac"]["mediators"] in range(8, 17)
        assert not [k for k in params if k.startswith(("model.cigt.", "model.dim"))]
    for params, arch in by_backbone["token_transformer"]:
        assert {"dim", "depth", "components"} <= set(arch["model"])
        assert "cigt" not in arch["model"] and "nac" not in arch["model"]
        assert not [k for k in params if k.startswith(("model.cigt.", "model.nac."))]


def test_a_joint_space_round_trips_through_to_dict():
    space = parse_space(JOINT)
    again = parse_space(yaml.safe_dump(space.to_dict()))
    assert again.to_dict() == space.to_dict()
    assert again.backbones == ["token_transformer", "cigt", "nac"]


def test_a_fixed_backbone_is_not_suggested_and_needs_no_transformer_keys():
    space = parse_space("name: c\ntask: {dataset: digits}\nmodel:\n  backbone: cigt\n")
    study = optuna.create_study()
    trial = study.ask()
    arch = space.sample(trial)
    assert trial.params == {}
    assert arch["model"] == {"backbone": "cigt", "cigt": space.to_dict()["model"]["cigt"]}
    assert arch["model"]["cigt"]["widths"] == [1, 2, 4]


@pytest.mark.parametrize("text, expected", [
    ("name: t\ntask: {dataset: digits}\nmodel:\n  backbone: cigt\n  dim: 16\n",
     ["space.yaml:5: model.dim: applies to the token_transformer backbone only, and this space's "
      "backbone is cigt"]),
    ("name: t\ntask: {dataset: digits}\nmodel:\n  backbone: token_transformer\n  dim: 16\n"
     "  depth: 2\n  nac: {mediators: 4}\n",
     ["space.yaml:7: model.nac: configures the nac backbone, and this space's backbone is "
      "token_transformer"]),
    ("name: t\ntask: {dataset: digits}\nmodel:\n  backbone: {choice: [cigt, token_transformer]}\n",
     ["space.yaml:3: model.dim: missing required field",
      "space.yaml:3: model.depth: missing required field"]),
    ("name: t\ntask: {dataset: parity}\nmodel:\n  backbone: cigt\n",
     ["space.yaml:4: model.backbone: the cigt backbone is convolutional and needs images, but "
      "parity gives sequences"]),
    ("name: t\ntask: {dataset: digits}\nmodel:\n  backbone: cigt\n  cigt: {widths: [4]}\n",
     ["space.yaml:5: model.cigt.widths: a trellis needs at least 2 layers (the last one holds "
      "the leaves)"]),
    ("name: t\ntask: {dataset: digits}\nmodel:\n  backbone: cigt\n  cigt: {widht: [1, 2]}\n",
     ["space.yaml:5: model.cigt.widht: unknown key; did you mean 'widths'?"]),
    ("name: t\ntask: {dataset: digits}\nmodel:\n  backbone: nac\n  nac:\n    dim: 30\n"
     "    heads: 4\n    patch_size: 3\n",
     ["space.yaml:7: model.nac.heads: dim (30) is not divisible by heads (4)",
      "space.yaml:8: model.nac.patch_size: patch_size 3 does not divide the 8x8 images of digits"]),
    ("name: t\ntask: {dataset: digits}\nmodel:\n  backbone: {choice: [cigt, nca]}\n",
     ["space.yaml:4: model.backbone.choice[1]: unknown backbone 'nca'; did you mean 'nac'?"]),
    ("name: t\ntask: {dataset: digits}\nmodel:\n  backbone: nac\nsweep:\n"
     "  cigt.multipath_threshold: [0.5]\n",
     ["space.yaml:6: sweep.cigt.multipath_threshold: the backbone is never cigt in this space "
      "(model.backbone), so cigt.multipath_threshold cannot be swept"]),
])
def test_backbone_keys_are_checked_where_they_are_written(text, expected):
    assert problems(text) == expected
