"""Training hooks: the gradient-routing stage switch and SDCoNet's extra training statistics."""

from __future__ import annotations

import logging
import math

from detectron2.engine import HookBase
from detectron2.utils import comm

from sdconet.engine.routing import StagePolicy

from .solver import core_of

__all__ = ["SRStageHook", "TrainingStatsHook"]

logger = logging.getLogger(__name__)


class SRStageHook(HookBase):
    """Switches the core model between stage 1 (SR off) and stage 2 (SR on) by iteration.

    The stage is a pure function of the iteration (:meth:`StagePolicy.stage_at_iter`), applied in ``before_train``
    (so ``--resume`` lands in the right stage: ``trainer.iter`` is the resumed iteration there) and checked before
    every step (one comparison). Every rank runs it at the same iteration. It only toggles
    ``core.set_sr_enabled`` -- never ``requires_grad`` -- so the DDP wrapper (built with
    ``find_unused_parameters=True``) stays valid across the switch. The stage is logged as the scalar ``stage``.

    Args:
        policy: the framework-free stage policy (SR start epoch, whether the model has SR).
        iters_per_epoch: iterations per epoch of this run.
    """

    def __init__(self, policy: StagePolicy, iters_per_epoch: int) -> None:
        if iters_per_epoch <= 0:
            raise ValueError(f"SRStageHook: iters_per_epoch must be > 0 (got {iters_per_epoch})")
        self.policy = policy
        self.iters_per_epoch = int(iters_per_epoch)
        self.stage = 0

    def _apply(self) -> None:
        it = self.trainer.iter
        stage = self.policy.stage_at_iter(it, self.iters_per_epoch)
        enabled = self.policy.sr_enabled_at_iter(it, self.iters_per_epoch)
        core = core_of(self.trainer.model)
        if stage != self.stage or bool(core.sr_enabled) != enabled:
            core.set_sr_enabled(enabled)
            logger.info(
                "Gradient routing: iteration %d (epoch %d) -> stage %d (SR branch %s)",
                it,
                self.policy.epoch_at_iter(it, self.iters_per_epoch),
                stage,
                "on" if core.sr_enabled else "off",
            )
            self.stage = stage

    def before_train(self) -> None:
        self._apply()

    def before_step(self) -> None:
        self._apply()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("stage", float(self.stage), smoothing_hint=False)


class TrainingStatsHook(HookBase):
    """Logs per-group learning rates (``lr/<group>``), the pre-clip gradient norm (``grad_norm``) and the core's
    ``last_stats`` (``train/kept_token_ratio``, ``train/sr_psnr`` while SR trains) to the EventStorage, i.e. to
    ``metrics.json`` and TensorBoard. Main process only (statistics of its own batch)."""

    def after_step(self) -> None:
        if not comm.is_main_process():
            return
        storage = self.trainer.storage
        for group in self.trainer.optimizer.param_groups:
            if group["params"] and "name" in group:
                storage.put_scalar(f"lr/{group['name']}", group["lr"], smoothing_hint=False)
        grad_norm = getattr(self.trainer.optimizer, "last_grad_norm", float("nan"))
        if math.isfinite(grad_norm):
            storage.put_scalar("grad_norm", grad_norm)
        for key, value in (getattr(core_of(self.trainer.model), "last_stats", None) or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                storage.put_scalar(f"train/{key}", float(value))
