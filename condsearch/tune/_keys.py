"""The names condsearch's Ray Tune pieces agree on: report keys, trial attributes, MLflow tags."""

from __future__ import annotations

from typing import Final

# ---- keys of the trainable's reports (`ray.tune.report`) ----------------------------------------

#: the epoch just trained (the final report: the last epoch trained)
EPOCH: Final = "epoch"
#: the epoch's mean training loss
LOSS: Final = "loss"
#: the validation accuracy after the epoch (the final report: of the full evaluation)
ACCURACY: Final = "accuracy"
#: how many validation samples the report's FLOPs (and latency) were measured on
FLOPS_SAMPLES: Final = "flops_samples"
#: the trial's MLflow run id ("" without tracking), so the driver can close a stopped trial's run
RUN_ID: Final = "condsearch_run_id"
#: the final report only: the whole TrialResult as JSON (values, knobs, derived points)
RESULT: Final = "condsearch_result"

# ---- declared elsewhere, re-exported under the names the Ray pieces use -------------------------

# The study attributes and MLflow tags live with the others in condsearch/_names.py; a per-epoch
# report measures FLOPs on at most FLOPS_SUBSET validation samples, chosen by a permutation under
# FLOPS_SUBSET_SEED: a multi-fidelity rung's subset (condsearch/train/_interim.py).
from condsearch._names import ATTR_LAST_REPORT, ATTR_STOPPED_AT, TAG_STOPPED_EARLY  # noqa: E402,F401
from condsearch.train._interim import INTERIM_SAMPLES as FLOPS_SUBSET  # noqa: E402,F401
from condsearch.train._interim import INTERIM_SEED as FLOPS_SUBSET_SEED  # noqa: E402,F401
