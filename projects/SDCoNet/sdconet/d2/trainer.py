"""``SDCoNetTrainer``: detectron2's DefaultTrainer with the plugin's optimizer, data, evaluators, DDP and hooks.

It trains any meta-architecture: SDCoNet, detectron2's own detectors (the baselines) and those with the SR add-on
(:mod:`sdconet.d2.sr_branch`). The gradient-routing stage hook and the SR evaluator apply only to models with an SR
branch; for the others one log line says they are skipped.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import List

from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, create_ddp_model, hooks
from detectron2.engine.train_loop import TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from sdconet.engine.routing import StagePolicy

from . import evaluation
from .checkpoint import SDCoNetCheckpointer
from .hooks import BestCheckpointer, ResumeStateHook, SRStageHook, TrainingStatsHook, sr_controller
from .mapper import SDCoNetDatasetMapper
from .schedule import sr_start_epoch
from .solver import build_optimizer
from .sr_branch import build_model
from .train_loader import build_resumable_train_loader

__all__ = ["SDCoNetTrainer"]

logger = logging.getLogger(__name__)


class SDCoNetTrainer(DefaultTrainer):
    """DefaultTrainer with:

    * the model from :func:`sdconet.d2.sr_branch.build_model` (detectron2's ``build_model`` + the SR add-on when
      ``MODEL.SR_BRANCH.ENABLED``);
    * ``SOLVER.OPTIMIZER`` over the fixed gradient-routing groups (:func:`sdconet.d2.solver.build_optimizer`):
      SDCoNet's AdamW + full-model clipping, or detectron2's SGD recipe for its own detectors;
    * DDP built with ``find_unused_parameters`` = ``SOLVER.FIND_UNUSED_PARAMETERS`` or the model has an SR branch
      (SR parameters are unused in stage 1; DefaultTrainer hard-codes ``broadcast_buffers=False`` only, hence the
      ``__init__`` override);
    * the LR/HR dataset mapper for training and testing;
    * the evaluators of :func:`sdconet.d2.evaluation.build_evaluator` (protocol-aware COCO + the SR evaluator for
      models with SR), and ``OUTPUT_DIR/report.md`` written after every evaluation (:meth:`test`);
    * hooks: :class:`SRStageHook` first (models with an SR branch), :class:`TrainingStatsHook` before the writers,
      :class:`BestCheckpointer` (``SOLVER.BEST_METRIC``) after the evaluation.
    * the resumable deterministic training stream (:mod:`sdconet.d2.train_loader`) and :class:`ResumeStateHook`
      (after the stage hook): a stopped and resumed run equals the uninterrupted one (bit-identical weights on CPU).

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
        # The run's seed: SEED, or one drawn now (saved with every checkpoint, so --resume keeps it).
        self.run_seed = (
            int(cfg.SEED) if cfg.SEED >= 0 else int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        )
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        find_unused = bool(cfg.SOLVER.FIND_UNUSED_PARAMETERS) or sr_controller(model) is not None
        model = create_ddp_model(model, broadcast_buffers=False, find_unused_parameters=find_unused)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SDCoNetCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------------------------------------ builders
    @classmethod
    def build_model(cls, cfg):
        model = build_model(cfg)
        logging.getLogger(__name__).info("Model:\n%s", model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """The resumable deterministic training stream (:mod:`sdconet.d2.train_loader`)."""
        mapper = SDCoNetDatasetMapper(cfg, is_train=True)
        return build_resumable_train_loader(cfg, mapper, seed=cfg.SEED if cfg.SEED >= 0 else 0)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=SDCoNetDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """The evaluators of :func:`sdconet.d2.evaluation.build_evaluator` (protocol-aware COCO + SR metrics for
        models with an SR branch when ``TEST.SR_EVAL.ENABLED``)."""
        return evaluation.build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """DefaultTrainer.test (every dataset of ``DATASETS.TEST``), then ``OUTPUT_DIR/report.md`` (+
        ``report.json``, ``report/*.png``) from the evaluators' full results."""
        if evaluators is None:
            evaluators = [cls.build_evaluator(cfg, name) for name in cfg.DATASETS.TEST]
        elif not isinstance(evaluators, (list, tuple)):
            evaluators = [evaluators]
        results = super().test(cfg, model, evaluators)
        names = list(cfg.DATASETS.TEST)
        per_dataset = results if len(names) != 1 else {names[0]: results}
        if comm.is_main_process() and per_dataset:
            evaluation.write_evaluation_report(
                cfg, dict(zip(names, evaluators)), per_dataset, iteration=evaluation.current_iteration()
            )
        return results

    def build_hooks(self) -> List[hooks.HookBase]:
        ret = super().build_hooks()
        ret.insert(0, ResumeStateHook(self.run_seed))
        if sr_controller(self.model) is None:
            logger.info(
                "No SR branch in %s: gradient routing (SR stage hook) skipped", type(self.model).__name__
            )
        else:
            policy = StagePolicy(sr_start_epoch=sr_start_epoch(self.cfg), has_sr=True)
            ret.insert(0, SRStageHook(policy, self.cfg.SOLVER.ITERS_PER_EPOCH))
        if self.cfg.SOLVER.BEST_METRIC and self.cfg.DATASETS.TEST and comm.is_main_process():
            eval_at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            ret.insert(
                eval_at + 1,
                BestCheckpointer(
                    self.cfg.TEST.EVAL_PERIOD,
                    self.checkpointer,
                    self.cfg.SOLVER.BEST_METRIC,
                    self.cfg.OUTPUT_DIR,
                    self.cfg.DATASETS.TEST,
                ),
            )
        writer_at = next((i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)), len(ret))
        ret.insert(writer_at, TrainingStatsHook())
        return ret
