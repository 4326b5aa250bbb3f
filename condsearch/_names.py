"""Names every layer shares: the attributes a search writes into its Optuna study, the objectives,
metrics, constraints and samplers a space may name.

It imports nothing, so the space, the search and the plugins (NNI) agree on one spelling of each
without importing one another.
"""

from __future__ import annotations

from typing import Final

# ---- Optuna trial user attributes a search writes -----------------------------------------------

#: every metric the trial measured (objective metrics, params, latency, ...)
ATTR_METRICS: Final = "condsearch.metrics"
#: the inference-knob values the point was measured at
ATTR_KNOBS: Final = "condsearch.knobs"
#: the architecture the space sampled
ATTR_ARCH: Final = "condsearch.arch"
#: the task (dataset) the trial trained on
ATTR_TASK: Final = "condsearch.task"
#: the MLflow run that logged the point
ATTR_RUN: Final = "condsearch.run_id"
#: the MLflow run that holds the trained weights (the trained trial's, for a derived point too)
ATTR_WEIGHTS_RUN: Final = "condsearch.weights_run_id"
#: on a derived point (a knob setting of a trained trial): the trained trial's number
ATTR_DERIVED_FROM: Final = "condsearch.derived_from"
#: on a failed trial: why it failed
ATTR_ERROR: Final = "condsearch.error"
#: the Ray Tune trial id that ran the trial (the ray backend)
ATTR_RAY_TRIAL: Final = "condsearch.ray_trial_id"

# ---- Optuna trial system attributes -------------------------------------------------------------

#: the parameter set an NNI tuner proposed for the trial (replayed into the tuner on resume)
ATTR_NNI_PARAMS: Final = "condsearch.nni_parameters"
#: system attribute of a running trial: where its MLflow runs are (uri, experiment, parent run)
ATTR_TRACKING: Final = "condsearch.tracking"
#: a trial a scheduler stopped early (PRUNED) or that failed: its last report (numeric values)
ATTR_LAST_REPORT: Final = "condsearch.last_report"
#: the last epoch a trial stopped early had reported
ATTR_STOPPED_AT: Final = "condsearch.stopped_at_epoch"
#: a trial a multi-fidelity scheduler judged: its result at each rung it reached, as
#: {"<epoch>": {"values": {objective: value}, "feasible": bool}} (written as each rung is reached)
ATTR_RUNGS: Final = "condsearch.rungs"
#: a trial a scheduler stopped early: the scheduler's reason, one line
ATTR_STOP_REASON: Final = "condsearch.stop_reason"

# ---- MLflow tags and metrics of a trial's run -----------------------------------------------------

#: on a trial run a scheduler stopped early (ended KILLED): the last epoch it trained
TAG_STOPPED_EARLY: Final = "condsearch.stopped_early"
#: on a trial run a scheduler stopped early: the scheduler's reason
TAG_STOP_REASON: Final = "condsearch.stop_reason"
#: the prefix of the stepped metrics a trial's run gets at each rung (`rung_accuracy`, ...)
RUNG_METRIC_PREFIX: Final = "rung_"

# ---- Optuna study user attributes ---------------------------------------------------------------

#: the workdir state (WorkdirState as a dict), so a search can be read from its storage alone
ATTR_WORKDIR_STATE: Final = "condsearch.workdir_state"
#: the hypervolume reference point, fixed once the study has its first points
ATTR_HYPERVOLUME_REFERENCE: Final = "condsearch.hypervolume_reference"

# ---- objectives, metrics, constraints -----------------------------------------------------------

#: objective name -> the direction Optuna optimizes it in
OBJECTIVES: Final[dict[str, str]] = {
    "accuracy": "maximize", "flops": "minimize", "params": "minimize", "latency": "minimize",
}
#: objective name in a search space -> the metric key a trial reports
OBJECTIVE_METRICS: Final[dict[str, str]] = {
    "accuracy": "accuracy", "flops": "flops", "params": "params", "latency": "latency_ms",
}
#: constraint name in a search space -> the metric it bounds
CONSTRAINT_METRICS: Final[dict[str, str]] = {"max_flops": "flops", "max_params": "params"}

# ---- samplers -----------------------------------------------------------------------------------

#: the Optuna samplers a space may name (`sampler: tpe`)
SAMPLERS: Final = ("tpe", "nsga2", "random", "gp")
#: NNI tuners a space may name (`sampler: {nni: tpe}`), each -> the constructor options it takes
NNI_TUNERS: Final[dict[str, tuple[str, ...]]] = {
    "tpe": ("tpe_args",), "evolution": ("population_size",),
    "anneal": ("parallel_optimize", "constant_liar_type"), "random": (),
}
