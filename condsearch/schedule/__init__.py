"""Multi-fidelity scheduling: which trials keep training, judged on several objectives at once.

`MOASHA` is multi-objective asynchronous successive halving: at each rung epoch
(`rung_levels`) a trial goes on only if it ranks in the top 1/eta of the results recorded there,
ranked by non-dominated sorting, then crowding distance, then trial id; infeasible results rank
last. It is plain Python (no torch, numpy, Optuna or Ray) and imports no other condsearch
package, so the local trial loop, a Ray Tune scheduler and the reports can all drive it, and its
`state()` is plain data a resumed search rebuilds it from.
"""

from condsearch.schedule._mo_asha import (
    CONTINUE,
    FINISHED,
    MOASHA,
    STOP,
    Action,
    Decision,
    TrialId,
)
from condsearch.schedule._rungs import rung_levels

__all__ = ["CONTINUE", "FINISHED", "MOASHA", "STOP", "Action", "Decision", "TrialId",
           "rung_levels"]
