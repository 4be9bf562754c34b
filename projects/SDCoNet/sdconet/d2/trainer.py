"""``SDCoNetTrainer``: detectron2's DefaultTrainer with SDCoNet's optimizer, data, evaluators, DDP and hooks."""

from __future__ import annotations

import logging
import os
import weakref
from typing import List

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, create_ddp_model, hooks
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.utils.logger import setup_logger

from sdconet.engine.routing import StagePolicy

from .hooks import SRStageHook, TrainingStatsHook
from .mapper import SDCoNetDatasetMapper
from .schedule import sr_start_epoch
from .solver import build_sdconet_optimizer, core_of
from .sr_evaluator import SREvaluator

__all__ = ["SDCoNetTrainer"]

logger = logging.getLogger(__name__)


class SDCoNetTrainer(DefaultTrainer):
    """DefaultTrainer with:

    * AdamW over the fixed gradient-routing groups and full-model clipping (:func:`build_sdconet_optimizer`);
    * DDP built with ``find_unused_parameters=SOLVER.FIND_UNUSED_PARAMETERS`` (SR parameters are unused in stage 1;
      DefaultTrainer hard-codes ``broadcast_buffers=False`` only, hence the ``__init__`` override);
    * the LR/HR dataset mapper for training and testing;
    * COCOEvaluator (maxDets ``TEST.COCO_MAX_DETS``) + optional SR evaluator;
    * hooks: :class:`SRStageHook` first, :class:`TrainingStatsHook` before the writers.

    Expects a config resolved by :func:`sdconet.d2.schedule.resolve_cfg` (``SOLVER.ITERS_PER_EPOCH`` > 0).
    """

    def __init__(self, cfg) -> None:
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        if cfg.SOLVER.ITERS_PER_EPOCH <= 0:
            raise ValueError(
                "SOLVER.ITERS_PER_EPOCH is not resolved; build the config with sdconet.d2.setup_cfg"
            )
        cfg = DefaultTrainer.auto_scale_workers(cfg, 1)  # REFERENCE_WORLD_SIZE is 0 (checked): a no-op
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(
            model, broadcast_buffers=False, find_unused_parameters=cfg.SOLVER.FIND_UNUSED_PARAMETERS
        )
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------------------------------------ builders
    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_sdconet_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=SDCoNetDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=SDCoNetDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """COCOEvaluator (AP, AP50, AP75, APs/m/l + per-class AP table) at ``TEST.COCO_MAX_DETS`` (+ SR metrics)."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        evaluators = [
            COCOEvaluator(
                dataset_name,
                tasks=("bbox",),
                output_dir=output_folder,
                max_dets_per_image=cfg.TEST.COCO_MAX_DETS,
            )
        ]
        if cfg.TEST.SR_EVAL.ENABLED:
            evaluators.append(SREvaluator(crop_border=cfg.TEST.SR_EVAL.CROP_BORDER))
        return DatasetEvaluators(evaluators) if len(evaluators) > 1 else evaluators[0]

    def build_hooks(self) -> List[hooks.HookBase]:
        ret = super().build_hooks()
        core = core_of(self.model)
        policy = StagePolicy(sr_start_epoch=sr_start_epoch(self.cfg), has_sr=bool(core.has_sr))
        ret.insert(0, SRStageHook(policy, self.cfg.SOLVER.ITERS_PER_EPOCH))
        writer_at = next((i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)), len(ret))
        ret.insert(writer_at, TrainingStatsHook())
        return ret
