"""Adaptive blocks: components that decide per input how much of themselves to run."""

from condsearch.blocks._protocol import (
    AdaptiveBlock,
    adaptive_blocks,
    inference_knobs,
    observe_targets,
    reset_routing_stats,
    routing_stats,
    set_inference_knobs,
    total_aux_loss,
    training_progress,
)
from condsearch.blocks.adatape import AdaTape
from condsearch.blocks.cigt import CIGTTrellis
from condsearch.blocks.early_exit import EarlyExit
from condsearch.blocks.moe import MoEFeedForward
from condsearch.blocks.nac import Circuit
from condsearch.blocks.token_selection import TokenSelection

__all__ = [
    "AdaTape",
    "AdaptiveBlock",
    "CIGTTrellis",
    "Circuit",
    "EarlyExit",
    "MoEFeedForward",
    "TokenSelection",
    "adaptive_blocks",
    "inference_knobs",
    "observe_targets",
    "reset_routing_stats",
    "routing_stats",
    "set_inference_knobs",
    "total_aux_loss",
    "training_progress",
]
