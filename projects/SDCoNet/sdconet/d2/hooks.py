"""Training hooks: the gradient-routing stage switch and SDCoNet's extra training statistics."""

from __future__ import annotations

import logging
import math

from detectron2.engine import HookBase
from detectron2.utils import comm

from sdconet.engine.routing import StagePolicy

from .solver import core_of, unwrap

__all__ = ["SRStageHook", "TrainingStatsHook", "sr_controller"]

logger = logging.getLogger(__name__)


def sr_controller(model):
    """The object that owns a model's SR switch (``has_sr``, ``sr_enabled``, ``set_sr_enabled``), or None.

    SDCoNet: its core (None for variants without SR); a detectron2 detector with the SR add-on
    (:mod:`sdconet.d2.sr_branch`): the detector itself; any other model: None. DDP wrappers are looked through.
    """
    model = unwrap(model)
    obj = getattr(model, "core", model)
    return obj if bool(getattr(obj, "has_sr", False)) else None


class SRStageHook(HookBase):
    """Switches the model's SR branch (:func:`sr_controller`) between stage 1 (off) and stage 2 (on) by iteration.

    The stage is a pure function of the iteration (:meth:`StagePolicy.stage_at_iter`), applied in ``before_train``
    (so ``--resume`` lands in the right stage: ``trainer.iter`` is the resumed iteration there) and checked before
    every step (one comparison). Every rank runs it at the same iteration. It only toggles
    ``set_sr_enabled`` -- never ``requires_grad`` -- so the DDP wrapper (built with
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
        core = sr_controller(self.trainer.model)
        if core is None:
            raise ValueError("SRStageHook: the model has no SR branch (install the hook only for models with one)")
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
    """Logs per-group learning rates (``lr/<group>``), the pre-clip gradient norm (``grad_norm``) and the model's
    ``last_stats`` if it has any (``train/kept_token_ratio``, ``train/sr_psnr`` while SR trains) to the
    EventStorage, i.e. to ``metrics.json`` and TensorBoard. Main process only (statistics of its own batch)."""

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
