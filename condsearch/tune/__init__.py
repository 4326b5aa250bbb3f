"""condsearch for Ray Tune users: a space's trials as a Tune trainable, its study as a searcher.

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    import condsearch, condsearch.tune

    space = condsearch.load_space("space.yaml", trust_code=True)
    searcher = condsearch.tune.Searcher(space)            # or storage="sqlite:///study.db"
    tuner = tune.Tuner(
        condsearch.tune.trainable(space),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=20,
                                    scheduler=ASHAScheduler(metric="accuracy", mode="max")))
    try:
        tuner.fit()
    finally:
        searcher.close_unfinished()                       # nothing stays RUNNING in the study

Each epoch reports `loss`, `accuracy` (validation), the space's objective metrics (`flops` on a
fixed validation subset of up to FLOPS_SUBSET samples, `params`, `latency_ms`), `epoch`,
`flops_samples` and the MLflow run id, with a checkpoint; the last epoch's report is the final
one, with full-validation values and the whole result (`RESULT`). The study ends up as a search
leaves it: finished trials COMPLETE (or FAIL) with derived knob points, trials a scheduler
stopped PRUNED with their last report (`condsearch.last_report`, `condsearch.stopped_at_epoch`).

With `search.workers_per_trial` W > 1, `trainable(space)` is a data-parallel trial's driver,
already wrapped with its resources (no CPU): each trial trains on W Ray Train workers (DDP), and
rank 0's epoch reports reach Tune with the same keys. Give the Tuner a `max_concurrent_trials`
whose W workers each the cluster can place at once, and leave `reuse_actors` off.

`MOASHAScheduler(space)` is the space's multi-objective successive halving
(`search.scheduler.mo_asha`) as a Tune scheduler, the rule `condsearch search` applies on both
backends: at each rung epoch it ranks the trials' reports on all the space's objectives at once
(non-dominated sorting, then crowding distance; infeasible results last) and stops those outside
the top 1/reduction_factor. Pass it as `TuneConfig(scheduler=condsearch.tune.MOASHAScheduler(
space))` in place of ASHA above; `scheduler.rule` (a `condsearch.schedule.MOASHA`) holds every
rung result.
"""

from condsearch.track._target import TrackingTarget
from condsearch.train._interim import subset_indices
from condsearch.tune._keys import (
    ACCURACY,
    ATTR_LAST_REPORT,
    ATTR_STOPPED_AT,
    EPOCH,
    FLOPS_SAMPLES,
    FLOPS_SUBSET,
    LOSS,
    RESULT,
    RUN_ID,
    TAG_STOPPED_EARLY,
)
from condsearch.tune._reports import result_of
from condsearch.tune._scheduler import MOASHAScheduler
from condsearch.tune._searcher import Searcher
from condsearch.tune._trainable import trainable

__all__ = [
    "ACCURACY", "ATTR_LAST_REPORT", "ATTR_STOPPED_AT", "EPOCH", "FLOPS_SAMPLES", "FLOPS_SUBSET",
    "LOSS", "MOASHAScheduler", "RESULT", "RUN_ID", "Searcher", "TAG_STOPPED_EARLY",
    "TrackingTarget", "result_of", "subset_indices", "trainable",
]
