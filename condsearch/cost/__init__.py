"""What a candidate costs: per-sample FLOPs on real inputs, parameters, latency."""

from condsearch.cost._formulas import reference_counter
from condsearch.cost._owners import counting, owners
from condsearch.cost._params_latency import batch1_latency_ms, count_params
from condsearch.cost._per_sample import per_sample_flops
from condsearch.cost._unattributed import UnattributedCostWarning

__all__ = [
    "UnattributedCostWarning",
    "batch1_latency_ms",
    "count_params",
    "counting",
    "owners",
    "per_sample_flops",
    "reference_counter",
]
