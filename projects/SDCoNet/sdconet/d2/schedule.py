"""Resolve the derived config keys (epoch recipe -> iterations, class count) before ``cfg.freeze()``."""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts

from sdconet.engine.schedule import EpochSchedule, scale_recipe

__all__ = ["count_train_images", "resolve_cfg", "sr_start_epoch"]

logger = logging.getLogger(__name__)


def count_train_images(cfg: CfgNode) -> int:
    """Images one epoch visits: ``DATASETS.TRAIN`` after the same filtering the train loader applies."""
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    return len(dicts)


def _resolve_num_classes(cfg: CfgNode) -> None:
    if cfg.MODEL.SDCONET.NUM_CLASSES > 0:
        return
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        raise ValueError("MODEL.SDCONET.NUM_CLASSES = 0 needs a dataset in DATASETS.TRAIN or DATASETS.TEST")
    name = names[0]
    meta = MetadataCatalog.get(name)
    classes = meta.get("thing_classes", None)
    if classes is None and name in DatasetCatalog.list():
        DatasetCatalog.get(name)  # load_coco_json fills thing_classes lazily
        classes = meta.get("thing_classes", None)
    if not classes:
        raise ValueError(
            f"MODEL.SDCONET.NUM_CLASSES = 0 but dataset '{name}' has no thing_classes metadata; "
            "register it with thing_classes or set MODEL.SDCONET.NUM_CLASSES"
        )
    cfg.MODEL.SDCONET.NUM_CLASSES = len(classes)


def _recipe(cfg: CfgNode):
    """(max_epochs, steps_epochs, sr_start_epoch) actually trained: the config's, or scaled to BUDGET_EPOCHS."""
    s = cfg.SOLVER
    budget = getattr(s, "BUDGET_EPOCHS", 0)
    if budget < 0:
        raise ValueError(f"SOLVER.BUDGET_EPOCHS must be >= 0 (got {budget})")
    if budget > 0:
        if s.MAX_EPOCHS <= 0:
            raise ValueError("SOLVER.BUDGET_EPOCHS needs an epoch recipe (SOLVER.MAX_EPOCHS > 0) to scale")
        r = scale_recipe(
            max_epochs=s.MAX_EPOCHS,
            steps_epochs=tuple(s.STEPS_EPOCHS),
            sr_start_epoch=s.SR_START_EPOCH,
            budget_epochs=budget,
        )
        return r.max_epochs, r.steps_epochs, r.sr_start_epoch
    return s.MAX_EPOCHS, tuple(s.STEPS_EPOCHS), s.SR_START_EPOCH


def sr_start_epoch(cfg: CfgNode) -> float:
    """First (possibly fractional) epoch of stage 2 that this run uses (``SOLVER.SR_START_EPOCH``, scaled by
    ``SOLVER.BUDGET_EPOCHS / SOLVER.MAX_EPOCHS`` when a budget is set)."""
    return _recipe(cfg)[2]


def resolve_cfg(cfg: CfgNode, *, count_images: bool = True) -> CfgNode:
    """Fill the derived keys in place (the config must not be frozen) and return it.

    * ``MODEL.SDCONET.NUM_CLASSES`` = 0 -> ``len(thing_classes)`` of the first train (or test) dataset.
    * ``SOLVER.ITERS_PER_EPOCH`` = ceil(N / IMS_PER_BATCH), N = training images after the loader's filtering, and
      ``SOLVER.SR_START_ITER`` = SR_START_EPOCH x ITERS_PER_EPOCH (the iteration where stage 2 starts).
    * ``SOLVER.BUDGET_EPOCHS > 0`` trains that many epochs of the recipe, with ``SR_START_EPOCH`` and
      ``STEPS_EPOCHS`` scaled to the same fractions of the run (:func:`sdconet.engine.schedule.scale_recipe`).
    * With ``SOLVER.MAX_EPOCHS > 0`` also ``SOLVER.MAX_ITER``, ``SOLVER.STEPS``, ``SOLVER.CHECKPOINT_PERIOD`` and
      ``TEST.EVAL_PERIOD`` from their epoch counterparts; ``MAX_EPOCHS = 0`` keeps the iteration keys as given.

    Args:
        cfg: a config built by :func:`sdconet.d2.config.get_sdconet_cfg` and merged with a yaml.
        count_images: False skips loading the training set (evaluation-only runs: the schedule is irrelevant).

    Raises:
        ValueError: on ``SOLVER.REFERENCE_WORLD_SIZE != 0`` (detectron2's auto-scaling would rescale MAX_ITER but
            not the stage switch), a frozen config, or an inconsistent recipe.
    """
    if cfg.is_frozen():
        raise ValueError("resolve_cfg: the config is frozen; call it before cfg.freeze()")
    _resolve_num_classes(cfg)
    s = cfg.SOLVER
    if s.REFERENCE_WORLD_SIZE != 0:
        raise ValueError(
            "SOLVER.REFERENCE_WORLD_SIZE must be 0 for SDCoNet: IMS_PER_BATCH is the total batch and the epoch "
            "recipe is GPU-count independent (auto-scaling would desynchronise the SR stage switch)"
        )
    if cfg.TEST.COCO_MAX_DETS > cfg.TEST.DETECTIONS_PER_IMAGE:
        logger.warning(
            "TEST.COCO_MAX_DETS (%d) > TEST.DETECTIONS_PER_IMAGE (%d): COCOeval sees fewer detections than its cap",
            cfg.TEST.COCO_MAX_DETS,
            cfg.TEST.DETECTIONS_PER_IMAGE,
        )
    if not count_images:
        return cfg
    n = count_train_images(cfg)
    max_epochs, steps_epochs, sr_start = _recipe(cfg)
    epochs = max_epochs if s.MAX_EPOCHS > 0 else max(1.0, sr_start)  # iteration recipe: only ipe used
    sched = EpochSchedule.from_epochs(
        num_images=n,
        ims_per_batch=s.IMS_PER_BATCH,
        max_epochs=epochs,
        steps_epochs=steps_epochs if s.MAX_EPOCHS > 0 else (),
        sr_start_epoch=sr_start,
        eval_period_epochs=cfg.TEST.EVAL_PERIOD_EPOCHS,
        checkpoint_period_epochs=s.CHECKPOINT_PERIOD_EPOCHS,
    )
    s.ITERS_PER_EPOCH = sched.iters_per_epoch
    s.SR_START_ITER = sched.sr_start_iter
    if s.MAX_EPOCHS > 0:
        s.MAX_ITER = sched.max_iter
        s.STEPS = sched.steps
        s.CHECKPOINT_PERIOD = sched.checkpoint_period
        cfg.TEST.EVAL_PERIOD = sched.eval_period
    if s.BUDGET_EPOCHS > 0:
        logger.info(
            "SOLVER.BUDGET_EPOCHS %d: the %s-epoch recipe is scaled by %d/%s -- LR steps at epochs %s, SR from "
            "epoch %.3f (the same fractions of the run)",
            s.BUDGET_EPOCHS,
            s.MAX_EPOCHS,
            s.BUDGET_EPOCHS,
            s.MAX_EPOCHS,
            [round(e, 3) for e in steps_epochs],
            sr_start,
        )
    logger.info(
        "Schedule: %d training images, total batch %d -> %d iterations/epoch; MAX_ITER %d (%s epochs); LR steps %s; "
        "SR branch (stage 2) from iteration %d (epoch %s); checkpoint every %d, evaluation every %d iterations",
        n,
        s.IMS_PER_BATCH,
        s.ITERS_PER_EPOCH,
        s.MAX_ITER,
        max_epochs if s.MAX_EPOCHS > 0 else "iteration recipe",
        list(s.STEPS),
        s.SR_START_ITER,
        round(sr_start, 3),
        s.CHECKPOINT_PERIOD,
        cfg.TEST.EVAL_PERIOD,
    )
    return cfg
