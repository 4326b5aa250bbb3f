"""The YAML document's shape: pydantic models (unknown keys forbidden) and each searchable key's spec."""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from condsearch.space._distributions import ParamSpec

BUILTIN_DATASETS = ("parity", "digits", "fashion_mnist", "npz")
BACKBONES = ("token_transformer", "cigt", "nac")
SAMPLERS = ("tpe", "nsga2", "random", "gp")
#: NNI tuners a space may name (`sampler: {nni: tpe}`), each -> the constructor options it takes
NNI_TUNERS = {"tpe": ("tpe_args",), "evolution": ("population_size",),
              "anneal": ("parallel_optimize", "constant_liar_type"), "random": ()}
#: objective name -> the direction Optuna optimizes it in
OBJECTIVES = {"accuracy": "maximize", "flops": "minimize", "params": "minimize", "latency": "minimize"}
#: sweepable inference knobs, `<component>.<knob>` -> the range each value must lie in
SWEEP_KNOBS = {
    "early_exit.threshold": ParamSpec("float", lo=0.0, lo_open=True, hi=1.0),
    "moe.eval_capacity_factor": ParamSpec("float", lo=0.0, lo_open=True),
    "token_selection.keep_ratio": ParamSpec("float", lo=0.0, lo_open=True, hi=1.0),
    "adatape.theta": ParamSpec("float", lo=0.0, lo_open=True),
    "cigt.multipath_threshold": ParamSpec("float", lo=0.0, lo_open=True, hi=1.0),
    "nac.keep_ratio": ParamSpec("float", lo=0.0, lo_open=True, hi=1.0),
}
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# Searchable keys: each may hold a fixed value or a distribution.
BACKBONE = ParamSpec("enum", "token_transformer", required=True, values=BACKBONES,
                     doc="the network family; a choice makes the sampler pick one per trial")
#: the token transformer's keys (directly under `model`); `required` ones only where it can be picked
MODEL_PARAMS = {
    "dim": ParamSpec("int", required=True, lo=1, doc="token width"),
    "depth": ParamSpec("int", required=True, lo=1, doc="number of transformer layers"),
    "heads": ParamSpec("int", 4, lo=1, doc="attention heads; must divide dim"),
    "mlp_ratio": ParamSpec("float", 2.0, lo=0, lo_open=True, doc="MLP hidden width / dim"),
    "patch_size": ParamSpec("int", 2, lo=1, doc="square patch side for images"),
    "dropout": ParamSpec("float", 0.0, lo=0, hi=1, hi_open=True, doc="dropout rate"),
}
COMPONENT_PARAMS = {
    # AdaTape comes first: when it is on, the components it excludes are not sampled at all.
    "adatape": {
        "enabled": ParamSpec("bool", False, doc="switch the component on"),
        "bank": ParamSpec("enum", "learned", values=("learned", "input"),
                          doc="learned bank, or one bank token per input patch / position"),
        "bank_size": ParamSpec("int", 32, lo=1, doc="rows of a learned bank"),
        "max_tape": ParamSpec("int", 8, lo=1, doc="most tape tokens a sample may read"),
        "tokens_per_step": ParamSpec("int", 2, lo=1, doc="bank entries merged per tape token"),
        "theta": ParamSpec("float", 2.0, lo=0, lo_open=True, doc="halting budget"),
        "ponder_weight": ParamSpec("float", 0.01, lo=0, doc="weight of the ponder loss"),
        "insert_after": ParamSpec("int", 0, lo=0, doc="layers run before the tape is appended"),
    },
    "early_exit": {
        "enabled": ParamSpec("bool", False, doc="switch the component on"),
        "every": ParamSpec("int", 1, lo=1, doc="an exit head after every N-th layer"),
        "positions": ParamSpec("int_list", None, lo=1, nullable=True, doc="explicit exit layers"),
        "criterion": ParamSpec("enum", "confidence", values=("confidence", "entropy")),
        "threshold": ParamSpec("float", 0.9, lo=0, lo_open=True, hi=1, doc="exit certainty"),
        "loss_weight": ParamSpec("float", 0.5, lo=0, doc="weight of the exit heads' loss"),
    },
    "moe": {
        "enabled": ParamSpec("bool", False, doc="switch the component on"),
        "experts": ParamSpec("int", 4, lo=1, doc="experts per MoE layer"),
        "top_k": ParamSpec("int", 1, lo=1, doc="experts each token runs"),
        "capacity_factor": ParamSpec("float", 1.25, lo=0, lo_open=True, doc="in training"),
        "eval_capacity_factor": ParamSpec("float", 2.0, lo=0, lo_open=True, doc="at inference"),
        "router_noise": ParamSpec("float", 0.0, lo=0, doc="std of noise on router logits"),
        "aux_loss_weight": ParamSpec("float", 0.01, lo=0, doc="load-balancing loss weight"),
        "every": ParamSpec("int", 2, lo=1, doc="an MoE MLP in every N-th layer"),
        "positions": ParamSpec("int_list", None, lo=1, nullable=True, doc="explicit MoE layers"),
    },
    "token_selection": {
        "enabled": ParamSpec("bool", False, doc="switch the component on"),
        "keep_ratio": ParamSpec("float", 0.5, lo=0, lo_open=True, hi=1, doc="share of tokens kept"),
        "positions": ParamSpec("int_list", None, lo=1, nullable=True,
                               doc="layers before which tokens are selected (default: middle)"),
        "scorer": ParamSpec("enum", "learned", values=("learned", "cls_attention")),
    },
}
#: the other backbones' keys, each in its own section (`model.cigt`, `model.nac`)
BACKBONE_PARAMS = {
    "cigt": {
        "widths": ParamSpec("int_list", [1, 2, 4], lo=1, doc="blocks in each trellis layer"),
        "channels": ParamSpec("int", 32, lo=1, doc="conv channels of one block"),
        "kernel": ParamSpec("int", 5, lo=1, doc="conv kernel side of the non-leaf layers"),
        "hidden": ParamSpec("int", 128, lo=2, doc="FC width of one leaf block"),
        "router_dim": ParamSpec("int", 64, lo=1, doc="hidden width of each router"),
        "ig_weight": ParamSpec("float", 1.0, lo=0, doc="information-gain loss weight (lambda)"),
        "balance": ParamSpec("float", 1.0, lo=0, doc="weight of H(p(n)) in the gain (beta)"),
        "temperature": ParamSpec("float", 25.0, lo=0, lo_open=True, doc="router softmax T0"),
        "temperature_decay": ParamSpec("float", 0.9999, lo=0, lo_open=True, hi=1,
                                       doc="T multiplies by this each optimizer step"),
        "temperature_min": ParamSpec("float", 0.1, lo=0, lo_open=True, doc="floor of T"),
        "warmup_epochs": ParamSpec("int", 1, lo=0, doc="epochs of random routes at the start"),
        "random_routing": ParamSpec("float", 0.5, lo=0, hi=1,
                                    doc="share of each batch routed at random after warm-up"),
        "multipath_threshold": ParamSpec("float", 1.0, lo=0, lo_open=True, hi=1,
                                         doc="at inference, also run paths more probable than this"),
    },
    "nac": {
        "dim": ParamSpec("int", 64, lo=1, doc="module state width"),
        "input_modules": ParamSpec("int", 8, lo=1, doc="modules that read the input tokens"),
        "mediators": ParamSpec("int", 32, lo=1, doc="modules that propagate"),
        "layers": ParamSpec("int", 4, lo=1, doc="propagation layers"),
        "heads": ParamSpec("int", 4, lo=1, doc="attention heads; must divide dim"),
        "signature_dim": ParamSpec("int", 16, lo=1, doc="width of module signatures"),
        "code_dim": ParamSpec("int", 32, lo=1, doc="width of module codes"),
        "tau": ParamSpec("float", 0.9, lo=0, lo_open=True, hi=2,
                         doc="kernel truncation: lower is sparser"),
        "mlp_ratio": ParamSpec("float", 2.0, lo=0, lo_open=True, doc="FFN hidden width / dim"),
        "patch_size": ParamSpec("int", 4, lo=1, doc="square patch side for images"),
        "keep_ratio": ParamSpec("float", 1.0, lo=0, lo_open=True, hi=1,
                                doc="share of mediators run at inference"),
        "dropout": ParamSpec("float", 0.0, lo=0, hi=1, hi_open=True, doc="dropout rate"),
        "readout_inputs": ParamSpec("bool", True,
                                    doc="the output module also reads the input modules"),
    },
}
TRAIN_PARAMS = {
    "epochs": ParamSpec("int", 5, lo=1),
    "steps": ParamSpec("int", None, lo=1, nullable=True, doc="optimizer steps; overrides epochs"),
    "batch_size": ParamSpec("int", 128, lo=1),
    "lr": ParamSpec("float", 1e-3, lo=0, lo_open=True),
    "weight_decay": ParamSpec("float", 0.05, lo=0),
    "warmup_fraction": ParamSpec("float", 0.05, lo=0, hi=1, hi_open=True),
    "eval_batch_size": ParamSpec("int", 256, lo=1),
    "device": ParamSpec("enum", "auto", values=("auto", "cpu", "cuda")),
    "precision": ParamSpec("enum", "fp32", values=("fp32", "bf16")),
}


class Strict(BaseModel):
    """Unknown keys are errors and YAML types are taken as written (no "5" -> 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _param_fields(params: dict[str, ParamSpec], required: bool = True) -> dict[str, Any]:
    return {name: (Any, ... if s.required and required else s.default) for name, s in params.items()}


def knob_param(knob: str) -> str:
    """The parameter name under which a space samples an inference knob `<component>.<knob>`."""
    component, name = knob.split(".", 1)
    return f"model.{component}.{name}" if component in BACKBONE_PARAMS else (
        f"model.components.{component}.{name}")


class TaskSpec(Strict):
    dataset: str
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    train_limit: Annotated[int, Field(gt=0)] | None = None
    length: int = Field(16, ge=1)
    size: int = Field(12000, ge=3)
    path: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value in BUILTIN_DATASETS or _FACTORY.match(value):
            return value
        from condsearch.space._distributions import suggest_key

        hint = suggest_key(value, BUILTIN_DATASETS, "expected one of")
        raise ValueError(f"unknown dataset {value!r}; {hint} (or a 'module:function' factory)")


def _component_spec(name: str) -> Any:
    title = "".join(part.title() for part in name.split("_")) + "Spec"
    return create_model(title, __base__=Strict, **_param_fields(COMPONENT_PARAMS[name]))


_COMPONENT_SPECS = {name: _component_spec(name) for name in COMPONENT_PARAMS}
ComponentsSpec = create_model(
    "ComponentsSpec", __base__=Strict,
    **{name: (spec, Field(default_factory=spec)) for name, spec in _COMPONENT_SPECS.items()},
)


_BACKBONE_SPECS = {
    name: create_model("".join(p.title() for p in name.split("_")).upper() + "Spec", __base__=Strict,
                       **_param_fields(params))
    for name, params in BACKBONE_PARAMS.items()
}
# Which keys are required depends on the backbones a space can pick, so the checker enforces it.
ModelSpec = create_model(
    "ModelSpec",
    __base__=Strict,
    backbone=(Any, ...),
    components=(ComponentsSpec, Field(default_factory=ComponentsSpec)),
    **{name: (spec | None, None) for name, spec in _BACKBONE_SPECS.items()},
    **_param_fields(MODEL_PARAMS, required=False),
)
TrainSpec = create_model("TrainSpec", __base__=Strict, **_param_fields(TRAIN_PARAMS))


class ConstraintsSpec(Strict):
    max_flops: Annotated[float, Field(gt=0)] | None = None
    max_params: Annotated[float, Field(gt=0)] | None = None


class SamplerSpec(Strict):
    name: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    #: an NNI tuner proposes each trial instead of an Optuna sampler (the `nni` extra)
    nni: Literal[tuple(NNI_TUNERS)] | None = None  # type: ignore[valid-type]
    options: dict[str, Any] = Field(default_factory=dict)
    #: cost objective -> the budget over which NNI's single score is penalized
    budget: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    #: how much accuracy each budget-relative unit of cost over the budget costs the score
    penalty: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _nni_fields(self) -> SamplerSpec:
        if self.nni is None:
            for key in ("budget", "penalty"):
                if key in self.model_fields_set:
                    raise ValueError(f"{key} folds the objectives into one score for an NNI "
                                     "tuner; it applies only with sampler: {nni: ...}")
            return self
        if "name" in self.model_fields_set:
            raise ValueError("give either name (an Optuna sampler) or nni (an NNI tuner), not "
                             "both; with --set, replace the whole sampler: "
                             "--set 'sampler={nni: tpe}'")
        allowed = NNI_TUNERS[self.nni]
        for key in self.options:
            if key not in allowed:
                from condsearch.space._distributions import suggest_key

                takes = (suggest_key(key, allowed, f"NNI's {self.nni} tuner takes")
                         if allowed else f"NNI's {self.nni} tuner takes no options")
                raise ValueError(f"unknown option {key!r}; {takes} (the seed comes from "
                                 "search.seed)")
        return self


class SearchSpec(Strict):
    trials: int = Field(12, ge=1)
    seed: int = Field(0, ge=0)
    concurrency: int = Field(1, ge=1)  # trials running at once (ray backend)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)  # fractions share a GPU between trials
    max_retries: int = Field(2, ge=0)  # reruns of a trial whose worker died


class SpaceDocument(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    task: TaskSpec
    model: ModelSpec  # type: ignore[valid-type]
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "flops"], min_length=1)
    constraints: ConstraintsSpec = Field(default_factory=ConstraintsSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)  # type: ignore[valid-type]
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    sweep: dict[str, list[float]] = Field(default_factory=dict)
    search: SearchSpec = Field(default_factory=SearchSpec)

    @field_validator("sampler", mode="before")
    @classmethod
    def _sampler_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


def model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `path`, if one does."""
    cls: type[BaseModel] | None = SpaceDocument
    for part in path:
        if cls is None or part not in cls.model_fields:
            return None
        cls = _model_in(cls.model_fields[part].annotation)
    return cls


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
