"""Framework-free training policy: gradient routing (stages, parameter groups), clipping, epoch arithmetic."""

from .clipping import full_model_clipping
from .routing import (
    DEFAULT_NO_DECAY_KEYWORDS,
    GROUP_NAMES,
    PAPER_SR_LR_MULTIPLIER,
    StagePolicy,
    build_param_groups,
    param_group_of,
)
from .schedule import (
    EpochSchedule,
    ScaledRecipe,
    epoch_of_iter,
    epochs_to_iters,
    iters_per_epoch,
    scale_recipe,
)

__all__ = [
    "DEFAULT_NO_DECAY_KEYWORDS",
    "EpochSchedule",
    "GROUP_NAMES",
    "PAPER_SR_LR_MULTIPLIER",
    "ScaledRecipe",
    "StagePolicy",
    "build_param_groups",
    "epoch_of_iter",
    "epochs_to_iters",
    "full_model_clipping",
    "iters_per_epoch",
    "param_group_of",
    "scale_recipe",
]
