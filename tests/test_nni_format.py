"""NNI's search_space.json format: YAML -> NNI -> YAML keeps every distribution, what NNI's
format cannot say is refused by name, and `condsearch convert` does both directions."""

import json

import pytest
from helpers import ROOT, cli

from condsearch.interop import ConvertError, document_to_yaml, nni_to_document, space_to_nni
from condsearch.space import load_space, parse_space

SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))

EVERY_KIND = """\
name: every_kind
task: {dataset: digits}
model:
  backbone: token_transformer
  dim: {choice: [16, 32]}
  depth: {int: [2, 6], step: 2}
  heads: {int: [1, 4], log: true}
  mlp_ratio: {float: [1.0, 3.0], step: 0.5}
  patch_size: 4
  dropout: {float: [0.0, 0.3]}
  components:
    early_exit:
      enabled: {choice: [true, false]}
      positions: {choice: [null, [1], [1, 3]]}
      criterion: entropy
      threshold: {float: [0.5, 0.99]}
    moe:
      enabled: true
      experts: {choice: [2, 4]}
      top_k: 1
      aux_loss_weight: {float: [1.0e-3, 1.0e-1], log: true}
objectives: [accuracy, flops, params]
train: {epochs: 3, lr: {float: [1.0e-3, 1.0e-2], log: true}, precision: {choice: [fp32, bf16]}}
"""
CIGT = """\
name: cigt_only
task: {dataset: fashion_mnist}
model:
  backbone: cigt
  cigt:
    widths: {choice: [[1, 2, 4], [1, 2, 2]]}
    channels: 16
    ig_weight: {float: [0.1, 2.0], log: true}
"""


def round_trip(space):
    """The space to NNI's JSON text and back, taking what NNI lacks from the space itself."""
    search_space, _ = space_to_nni(space)
    doc, _ = nni_to_document(json.loads(json.dumps(search_space)), like=space)
    return parse_space(document_to_yaml(doc), "back.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_space_survives_the_round_trip(path):
    space = load_space(path)
    assert round_trip(space).to_dict() == space.to_dict()


@pytest.mark.parametrize("text", [EVERY_KIND, CIGT], ids=["every_kind", "cigt"])
def test_every_kind_of_distribution_survives_the_round_trip(text):
    space = parse_space(text, "space.yaml")
    back = round_trip(space)
    assert back.to_dict() == space.to_dict()
    assert back.distributions() == space.distributions()


def test_the_nni_format_nests_the_keys_a_switch_turns_on():
    search_space, _ = space_to_nni(parse_space(EVERY_KIND))
    assert search_space["model.depth"] == {"_type": "quniform", "_value": [2, 6, 2]}
    assert search_space["model.heads"] == {"_type": "qloguniform", "_value": [1, 4, 1]}
    assert search_space["model.dim"] == {"_type": "choice", "_value": [16, 32]}
    exit_on, exit_off = search_space["model.components.early_exit.enabled"]["_value"]
    assert exit_off == {"_name": False}
    assert exit_on["_name"] is True
    assert exit_on["model.components.early_exit.positions"] == {
        "_type": "choice", "_value": ["null", "[1]", "[1, 3]"]}  # NNI's choices hold no lists
    assert exit_on["model.components.early_exit.criterion"] == {"_type": "choice",
                                                                "_value": ["entropy"]}
    (moe_on,) = search_space["model.components.moe.enabled"]["_value"]  # fixed on: one option
    assert set(moe_on) == {"_name", "model.components.moe.experts",
                           "model.components.moe.aux_loss_weight"}
    assert "model.components.early_exit.loss_weight" not in exit_on  # fixed at its default
    assert search_space["model.patch_size"] == {"_type": "choice", "_value": [4]}
    assert search_space["train.epochs"] == {"_type": "choice", "_value": [3]}


def test_nni_itself_reads_what_is_written():
    pytest.importorskip("nni", reason='NNI needs pip install "condsearch[nni]"')
    from condsearch.interop import check_with_nni

    for path in SHIPPED:
        check_with_nni(space_to_nni(load_space(path))[0])
    check_with_nni(space_to_nni(parse_space(EVERY_KIND))[0])


@pytest.mark.parametrize(("old", "new", "key"), [
    ("dropout: {float: [0.0, 0.3]}", "dropout: {float: [0.2, 0.2]}", "model.dropout"),
    ("depth: {int: [2, 6], step: 2}", "depth: {int: [3, 7], step: 2}", "model.depth"),
    ("epochs: 3", "epochs: 3, steps: {choice: [null, 100]}", "train.steps"),
], ids=["empty-float-range", "step-off-grid", "null-choice"])
def test_what_nni_cannot_express_is_refused_by_key(old, new, key):
    with pytest.raises(ConvertError) as info:
        space_to_nni(parse_space(EVERY_KIND.replace(old, new)))
    (problem,) = info.value.problems
    assert problem.startswith(key + ": ") and "cannot be expressed in NNI's format" in problem


def test_keys_no_trial_can_use_are_left_out_with_a_note():
    text = EVERY_KIND.replace("enabled: true", "enabled: false")
    space = parse_space(text)
    search_space, notes = space_to_nni(space)
    assert "model.components.moe.enabled" not in search_space
    assert notes == ["model.components.moe.experts, model.components.moe.aux_loss_weight: left "
                     "out, no trial uses them (moe is never enabled)"]


def test_a_hand_written_nni_file_becomes_a_valid_space_with_defaults_said():
    nni = {
        "train.lr": {"_type": "loguniform", "_value": [0.0001, 0.1]},
        "model.dim": {"_type": "choice", "_value": [32, 64]},
        "model.depth": {"_type": "randint", "_value": [2, 5]},
        "model.components.moe.experts": {"_type": "choice", "_value": [2, 4]},
    }
    doc, notes = nni_to_document(nni, name="hand")
    space = parse_space(document_to_yaml(doc))
    dists = space.distributions()
    assert dists["model.depth"].to_plain() == {"int": [2, 4], "step": 1, "log": False}
    assert dists["model.components.moe.enabled"].to_plain() is True
    assert space.task["dataset"] == "digits"
    assert space.objectives == [("accuracy", "maximize"), ("flops", "minimize")]
    assert any(n.startswith("task: not in NNI's format") for n in notes)
    assert any(n.startswith("model.components.moe.enabled: not in the file") for n in notes)
    assert space.backbones == ["token_transformer"]  # read from the keys the file sets


@pytest.mark.parametrize(("nni", "problem"), [
    ({"model.dimm": {"_type": "choice", "_value": [8]}},
     "model.dimm: not a condsearch key; NNI parameters must be named by condsearch keys, "
     "did you mean 'model.dim'?"),
    ({"train.lr": {"_type": "normal", "_value": [0.01, 0.001]}},
     "train.lr: normal cannot be expressed in condsearch, which has no normal distributions"),
    ({"model.depth": {"_type": "uniform", "_value": [1, 4]}},
     "model.depth: uniform gives reals, and this key takes an integer (use randint)"),
    ({"model.depth": {"_type": "qloguniform", "_value": [1, 8, 2]}},
     "model.depth: qloguniform is expressible only as a log-uniform integer range"),
    ({"train.lr": {"_type": "quniform", "_value": [0.15, 1.0, 0.1]}},
     "train.lr: quniform [0.15, 1, 0.1] rounds to multiples of q counted from 0"),
    ({"model.dim": {"_type": "choice", "_value": [{"_name": 8}, {"_name": 16}]}},
     "model.dim: only model.backbone and a component's enabled key switch other keys on"),
    ({"model.components.moe.enabled": {"_type": "choice", "_value": [
        {"_name": True, "model.dim": {"_type": "choice", "_value": [8]}}, {"_name": False}]}},
     "model.dim (in the option true of model.components.moe.enabled): does not belong there"),
    ({"model.cigt.channels": {"_type": "choice", "_value": [8]},
      "model.nac.dim": {"_type": "choice", "_value": [8]}},
     "the file sets keys of the backbones cigt, nac but has no model.backbone choice"),
])
def test_an_nni_file_condsearch_cannot_express_is_refused_by_key(nni, problem):
    with pytest.raises(ConvertError) as info:
        nni_to_document(nni)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_convert_writes_nni_json_and_reads_it_back_into_a_valid_space(tmp_path):
    pytest.importorskip("nni", reason='convert --to nni needs pip install "condsearch[nni]"')
    source = ROOT / "search_spaces/digits_moe.yaml"
    done = cli("convert", str(source), "--to", "nni", str(tmp_path / "moe.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "moe.json").read_text()) == space_to_nni(load_space(source))[0]

    done = cli("convert", str(tmp_path / "moe.json"), "--from", "nni", str(tmp_path / "back.yaml"),
               "--like", str(source))
    assert done.returncode == 0, done.stderr
    assert load_space(tmp_path / "back.yaml").to_dict() == load_space(source).to_dict()

    done = cli("convert", str(tmp_path / "moe.json"), "--from", "nni", str(tmp_path / "new.yaml"),
               "--task", "parity", "--objectives", "accuracy,params")
    assert done.returncode == 0, done.stderr
    space = load_space(tmp_path / "new.yaml")
    assert (space.name, space.task["dataset"]) == ("new", "parity")
    assert space.objectives == [("accuracy", "maximize"), ("params", "minimize")]
    assert space.distributions() == load_space(source).distributions()


def test_convert_refuses_bad_input_with_exit_2_and_no_traceback(tmp_path):
    (tmp_path / "bad.json").write_text('{"train.lr": {"_type": "normal", "_value": [0, 1]}}')
    done = cli("convert", str(tmp_path / "bad.json"), "--from", "nni", str(tmp_path / "o.yaml"))
    assert done.returncode == 2 and "train.lr: normal cannot be expressed" in done.stderr
    assert not (tmp_path / "o.yaml").exists()
    (tmp_path / "clash.json").write_text(
        '{"model.dim": {"_type": "choice", "_value": [16]},'
        ' "model.depth": {"_type": "choice", "_value": [2]},'
        ' "model.components.moe.enabled": {"_type": "choice", "_value": [true]},'
        ' "model.components.moe.top_k": {"_type": "choice", "_value": [8]}}')
    done = cli("convert", str(tmp_path / "clash.json"), "--from", "nni", str(tmp_path / "o.yaml"))
    assert done.returncode == 2
    assert "the converted space is not valid:\n  model.components.moe.top_k: top_k can reach 8" in (
        done.stderr)
    done = cli("convert", str(tmp_path / "bad.json"), str(tmp_path / "o.yaml"))
    assert done.returncode == 2 and "name exactly one of --to nni or --from nni" in done.stderr
    for out in (done.stderr,):
        assert "Traceback" not in out


VALID = """\
name: t
task: {dataset: digits}
model:
  backbone: token_transformer
  dim: 16
  depth: 2
"""


@pytest.mark.parametrize(("sampler", "problem"), [
    ("sampler: nni\n", "space.yaml:7: sampler: unknown sampler 'nni'; an NNI tuner is written "
                       "sampler: {nni: tpe | evolution | anneal | random}"),
    ("sampler: {nni: tpee}\n", "space.yaml:7: sampler.nni: unknown NNI tuner 'tpee'; did you "
                               "mean 'tpe'?"),
    ("sampler: {name: tpe, nni: tpe}\n", "space.yaml:7: sampler: give either name (an Optuna "
                                         "sampler) or nni (an NNI tuner), not both"),
    ("sampler: {nni: random, options: {seed: 1}}\n", "space.yaml:7: sampler: unknown option "
                                                     "'seed'; NNI's random tuner takes no options"),
    ("sampler: {budget: {flops: 10}}\n", "space.yaml:7: sampler: budget folds the objectives "
                                         "into one score for an NNI tuner"),
    ("sampler:\n  nni: tpe\n  budget: {params: 10}\n", "space.yaml:9: sampler.budget.params: no "
                                                       "budget for 'params'"),
], ids=["string", "unknown-tuner", "both", "option", "budget-without-nni", "budget-key"])
def test_an_nni_sampler_is_checked_where_it_is_written(sampler, problem):
    from condsearch.space import SpaceError

    with pytest.raises(SpaceError) as info:
        parse_space(VALID + sampler, "space.yaml")
    (line,) = str(info.value).splitlines()
    assert line.startswith(problem), line


def test_an_nni_sampler_parses_and_round_trips_through_the_document():
    space = parse_space(VALID + "constraints: {max_params: 50000}\nsampler:\n  nni: evolution\n"
                        "  options: {population_size: 8}\n  budget: {params: 40000}\n"
                        "  penalty: 0.5\n", "space.yaml")
    assert space.sampler == {"name": "nni:evolution", "nni": "evolution",
                             "options": {"population_size": 8}, "budget": {"params": 40000.0},
                             "penalty": 0.5}
    again = parse_space(document_to_yaml(space.to_dict()))
    assert again.sampler == space.sampler
