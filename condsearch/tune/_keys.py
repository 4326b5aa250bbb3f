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

#: a per-epoch report measures FLOPs on at most this many validation samples ...
FLOPS_SUBSET: Final = 256
#: ... chosen once by a permutation under this seed, the same samples for every trial and epoch
FLOPS_SUBSET_SEED: Final = 0

# ---- Optuna trial user attributes the Searcher writes -------------------------------------------

# Declared with the other study attributes, in condsearch/_names.py.
from condsearch._names import ATTR_LAST_REPORT, ATTR_STOPPED_AT  # noqa: E402,F401

# ---- MLflow --------------------------------------------------------------------------------------

#: on a trial run a scheduler stopped early (ended KILLED): the last epoch it reported
TAG_STOPPED_EARLY: Final = "condsearch.stopped_early"
