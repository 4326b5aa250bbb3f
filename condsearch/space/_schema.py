"""The YAML document's shape: pydantic models (unknown keys forbidden) and each searchable key's spec."""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from condsearch._names import NNI_TUNERS, SAMPLERS
from condsearch.space._distributions import ParamSpec
from condsearch.space.declared import BUILTIN_BACKBONES, BUILTIN_COMPONENTS

BUILTIN_DATASETS = ("parity", "digits", "fashion_mnist", "npz")
#: sweepable inference knobs of the built-ins, `<component>.<knob>` -> the range of a value
SWEEP_KNOBS = {
    **{f"{c.name}.{k}": spec for c in BUILTIN_COMPONENTS.values() for k, spec in c.knobs.items()},
    **{b.knob_key(k): spec for b in BUILTIN_BACKBONES.values() for k, spec in b.knobs.items()},
}
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

TRAIN_PARAMS = {
    "epochs": ParamSpec("int", 5, lo=1, doc="passes over the training split"),
    "steps": ParamSpec("int", None, lo=1, nullable=True, doc="optimizer steps; overrides epochs"),
    "batch_size": ParamSpec("int", 128, lo=1, doc="training batch size"),
    "lr": ParamSpec("float", 1e-3, lo=0, lo_open=True,
                    doc="AdamW peak learning rate (linear warm-up, then cosine decay)"),
    "weight_decay": ParamSpec("float", 0.05, lo=0, doc="AdamW weight decay"),
    "warmup_fraction": ParamSpec("float", 0.05, lo=0, hi=1, hi_open=True,
                                 doc="share of the steps spent in linear warm-up"),
    "eval_batch_size": ParamSpec("int", 256, lo=1,
                                 doc="batch size of evaluation and FLOP counting"),
    "device": ParamSpec("enum", "auto", values=("auto", "cpu", "cuda"),
                        doc="`auto` takes CUDA when present"),
    "precision": ParamSpec("enum", "fp32", values=("fp32", "bf16"),
                           doc="`bf16` autocast in training (CUDA only)"),
}


class Strict(BaseModel):
    """Unknown keys are errors and YAML types are taken as written (no "5" -> 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _param_fields(params: dict[str, ParamSpec], required: bool = True) -> dict[str, Any]:
    return {name: (Any, ... if s.required and required else s.default) for name, s in params.items()}


def knob_param(knob: str) -> str:
    """The parameter name under which a space samples an inference knob `<component>.<knob>`."""
    prefix, name = knob.split(".", 1)
    if prefix in BUILTIN_COMPONENTS:
        return f"model.components.{prefix}.{name}"
    return f"model.{prefix}.{name}"


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
    #: how image inputs are scaled; None: the source's default (max for digits and
    #: fashion_mnist, none otherwise). `condsearch.data._task.NORMALIZE` lists the same values.
    normalize: Literal["none", "max", "standardize"] | None = None

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value in BUILTIN_DATASETS or _FACTORY.match(value):
            return value
        from condsearch.space._distributions import suggest_key

        hint = suggest_key(value, BUILTIN_DATASETS, "expected one of")
        raise ValueError(f"unknown dataset {value!r}; {hint} (or a 'module:function' factory)")

    @field_validator("normalize", mode="before")
    @classmethod
    def _known_normalize(cls, value: Any) -> Any:
        options = typing.get_args(typing.get_args(cls.model_fields["normalize"].annotation)[0])
        if value is None or value in options:
            return value
        from condsearch.space._distributions import show, suggest_key

        listed = f"expected one of: {', '.join(options)}"
        hint = suggest_key(value, options) if isinstance(value, str) else listed
        raise ValueError(f"unknown normalize {show(value)}; {listed}"
                         + ("" if hint == listed else f" ({hint})"))


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


#: the default of `search.trial_timeout`: six hours, far past any trial the examples run, short
#: of a hung trial holding a search for good
DEFAULT_TRIAL_TIMEOUT_S = 6 * 3600.0

#: the largest search seed (`search.seed`, `--seed`)
MAX_SEED = 2**31 - 1


class MoAshaSpec(Strict):
    """Multi-objective asynchronous successive halving (`condsearch.schedule.MOASHA`): a trial
    is judged at epochs min_epochs * reduction_factor**k, the last rung being train.epochs."""

    #: the first rung: the epoch at which every trial is first judged
    min_epochs: int = Field(1, ge=1)
    #: eta: each rung keeps the top 1/eta of the results there, and is eta times the one before
    reduction_factor: float = Field(3.0, gt=1, allow_inf_nan=False)
    #: Hyperband brackets: bracket b starts judging at the b-th rung (1 = plain ASHA)
    brackets: int = Field(1, ge=1)


class SchedulerSpec(Strict):
    """How trials are stopped early: `mo_asha`, or none (every trial trains its whole budget)."""

    mo_asha: MoAshaSpec | None = None


class SearchSpec(Strict):
    trials: int = Field(12, ge=1)
    # Trial i trains with seed + i and a resumed sampler starts at seed + trials so far; numpy
    # and Optuna take seeds below 2**32, so a seed stops at 2**31 - 1 to leave room for resumes.
    seed: int = Field(0, ge=0, le=MAX_SEED)
    concurrency: int = Field(1, ge=1)  # trials running at once (ray backend)
    #: CPU threads a trial computes on (and Ray reserves for it); null: what the process may
    #: use (`condsearch.space._bounds.usable_cpus`), divided by the concurrency on Ray
    cpus_per_trial: Annotated[float, Field(gt=0)] | None = None
    gpus_per_trial: float = Field(0.0, ge=0)  # fractions share a GPU between trials
    max_retries: int = Field(2, ge=0)  # reruns of a trial whose worker died
    #: data-parallel processes training one trial (ray backend); cpus_per_trial and
    #: gpus_per_trial are then each worker's
    workers_per_trial: int = Field(1, ge=1)
    #: seconds a trial may run before it is failed; null: no limit
    trial_timeout: Annotated[float, Field(gt=0)] | None = DEFAULT_TRIAL_TIMEOUT_S
    #: GB a trial may plan to use in training; null: a share of the machine's (_bounds.py)
    max_memory_gb: Annotated[float, Field(gt=0)] | None = None
    #: stop unpromising trials early (multi-fidelity); null: every trial trains its budget
    scheduler: SchedulerSpec | None = None

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_by_name(cls, value: Any) -> Any:
        # `scheduler: mo_asha` takes MO-ASHA's defaults
        return {value: {}} if value == "mo_asha" else value


class SpaceDocument(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    task: TaskSpec
    #: checked key by key against the backbones' and components' declarations (see _space.py)
    model: dict[str, Any]
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
