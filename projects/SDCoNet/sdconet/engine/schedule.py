"""Epoch <-> iteration arithmetic for iteration-based trainers (framework-free).

The paper states its recipe in epochs (stage switch at epoch 16, MultiStepLR milestones in epochs). Iteration-based
trainers such as detectron2's count optimizer steps, and draw batches from an infinite sampler whose total batch
(all GPUs together) is ``ims_per_batch``. One epoch is therefore ``ceil(num_images / ims_per_batch)`` iterations,
independent of the number of GPUs.

Conventions used throughout:

* Iterations and epochs are **0-based**. Iteration ``it`` (the step about to run) belongs to epoch
  ``it // iters_per_epoch``.
* "Epoch ``e`` starts at iteration ``e * iters_per_epoch``". A milestone or switch "at epoch ``e``" takes effect
  from the first iteration of epoch ``e``, i.e. after ``e`` full epochs (the mmengine/PyTorch MultiStepLR meaning:
  milestone 11 of a 36-epoch run -> epochs 0..10 at the base LR, 11..35 decayed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence, Tuple

__all__ = [
    "EpochSchedule",
    "ScaledRecipe",
    "epoch_of_iter",
    "epochs_to_iters",
    "iters_per_epoch",
    "scale_recipe",
]


def iters_per_epoch(num_images: int, ims_per_batch: int) -> int:
    """Optimizer steps per epoch: ``ceil(num_images / ims_per_batch)``.

    Args:
        num_images: training images after the loader's own filtering (keep empty tiles when they are trained on).
        ims_per_batch: total batch size over all processes (detectron2's ``SOLVER.IMS_PER_BATCH``).

    Raises:
        ValueError: if either number is not positive.
    """
    if num_images <= 0:
        raise ValueError(
            f"iters_per_epoch: num_images must be > 0 (got {num_images}); is the training set empty?"
        )
    if ims_per_batch <= 0:
        raise ValueError(f"iters_per_epoch: ims_per_batch must be > 0 (got {ims_per_batch})")
    return math.ceil(num_images / ims_per_batch)


def epochs_to_iters(epochs: float, iters_per_epoch: int) -> int:
    """Iteration at which epoch ``epochs`` starts (``round(epochs * iters_per_epoch)``; fractional epochs allowed).

    Raises:
        ValueError: on a negative epoch or a non-positive ``iters_per_epoch``.
    """
    if iters_per_epoch <= 0:
        raise ValueError(f"epochs_to_iters: iters_per_epoch must be > 0 (got {iters_per_epoch})")
    if epochs < 0:
        raise ValueError(f"epochs_to_iters: epochs must be >= 0 (got {epochs})")
    return int(round(epochs * iters_per_epoch))


def epoch_of_iter(iteration: int, iters_per_epoch: int) -> int:
    """0-based epoch that the 0-based ``iteration`` belongs to."""
    if iters_per_epoch <= 0:
        raise ValueError(f"epoch_of_iter: iters_per_epoch must be > 0 (got {iters_per_epoch})")
    if iteration < 0:
        raise ValueError(f"epoch_of_iter: iteration must be >= 0 (got {iteration})")
    return iteration // iters_per_epoch


@dataclass(frozen=True)
class ScaledRecipe:
    """An epoch recipe shortened to a budget (see :func:`scale_recipe`); all values in (fractional) epochs."""

    max_epochs: float
    steps_epochs: Tuple[float, ...]
    sr_start_epoch: float
    scale: float


def scale_recipe(
    *, max_epochs: float, steps_epochs: Sequence[float], sr_start_epoch: float, budget_epochs: float
) -> ScaledRecipe:
    """Shorten an epoch recipe to ``budget_epochs``, keeping the stage switch and LR milestones at the same
    *fractions* of the run.

    A 3-epoch run of the paper's 52-epoch recipe (SR from epoch 16, LR x0.1 at 27) would otherwise never reach the
    SR stage (DINO+SR would equal DINO). Scaled by 3/52: SR from epoch 0.923, LR step at epoch 1.558.

    Args:
        max_epochs: the recipe's length (> 0).
        steps_epochs: its LR milestones in epochs.
        sr_start_epoch: its first epoch of stage 2 (SR on).
        budget_epochs: the length actually trained (> 0).

    Raises:
        ValueError: on a non-positive length or budget.
    """
    if max_epochs <= 0:
        raise ValueError(f"scale_recipe: max_epochs must be > 0 (got {max_epochs})")
    if budget_epochs <= 0:
        raise ValueError(f"scale_recipe: budget_epochs must be > 0 (got {budget_epochs})")
    f = budget_epochs / max_epochs
    return ScaledRecipe(
        max_epochs=float(budget_epochs),
        steps_epochs=tuple(e * f for e in steps_epochs),
        sr_start_epoch=sr_start_epoch * f,
        scale=f,
    )


@dataclass(frozen=True)
class EpochSchedule:
    """An epoch-based recipe resolved into iterations.

    Attributes:
        iters_per_epoch: optimizer steps per epoch.
        max_iter: total iterations (``max_epochs`` epochs).
        steps: LR-decay milestones as iterations, one per ``steps_epochs`` entry that lies inside the run.
        sr_start_iter: first iteration of stage 2 (SR branch on).
        eval_period: iterations between evaluations (0 = only at the end of training).
        checkpoint_period: iterations between checkpoints (>= 1).
    """

    iters_per_epoch: int
    max_iter: int
    steps: Tuple[int, ...]
    sr_start_iter: int
    eval_period: int
    checkpoint_period: int

    @classmethod
    def from_epochs(
        cls,
        *,
        num_images: int,
        ims_per_batch: int,
        max_epochs: float,
        steps_epochs: Sequence[float] = (),
        sr_start_epoch: float = 16,
        eval_period_epochs: float = 1,
        checkpoint_period_epochs: float = 1,
    ) -> EpochSchedule:
        """Resolve an epoch recipe.

        Args:
            num_images: training images per epoch (after the loader's filtering).
            ims_per_batch: total batch size over all processes.
            max_epochs: length of the run in epochs (> 0).
            steps_epochs: LR-decay milestones in epochs (strictly increasing); milestones at or beyond
                ``max_epochs`` are dropped (they would never fire).
            sr_start_epoch: first epoch of stage 2; may equal or exceed ``max_epochs`` (SR never trained).
            eval_period_epochs: evaluate every this many epochs; 0 = only after the last iteration.
            checkpoint_period_epochs: checkpoint every this many epochs (> 0).

        Raises:
            ValueError: naming the offending argument.
        """
        ipe = iters_per_epoch(num_images, ims_per_batch)
        if max_epochs <= 0:
            raise ValueError(f"EpochSchedule: max_epochs must be > 0 (got {max_epochs})")
        steps_epochs = tuple(steps_epochs)
        if any(b <= a for a, b in zip(steps_epochs, steps_epochs[1:])):
            raise ValueError(f"EpochSchedule: steps_epochs must be strictly increasing (got {steps_epochs})")
        if checkpoint_period_epochs <= 0:
            raise ValueError(
                f"EpochSchedule: checkpoint_period_epochs must be > 0 (got {checkpoint_period_epochs})"
            )
        if eval_period_epochs < 0:
            raise ValueError(f"EpochSchedule: eval_period_epochs must be >= 0 (got {eval_period_epochs})")
        max_iter = epochs_to_iters(max_epochs, ipe)
        steps = tuple(epochs_to_iters(e, ipe) for e in steps_epochs if e < max_epochs)
        return cls(
            iters_per_epoch=ipe,
            max_iter=max_iter,
            steps=steps,
            sr_start_iter=epochs_to_iters(sr_start_epoch, ipe),
            eval_period=epochs_to_iters(eval_period_epochs, ipe),
            checkpoint_period=max(1, epochs_to_iters(checkpoint_period_epochs, ipe)),
        )

    def to_dict(self) -> dict:
        return asdict(self)
