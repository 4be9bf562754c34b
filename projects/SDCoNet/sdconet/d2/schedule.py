"""Resolve the derived config keys (epoch recipe -> iterations, class count) before ``cfg.freeze()``."""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts

from sdconet.engine.schedule import EpochSchedule, scale_recipe

from .config import check_eval_config, config_has_sr

__all__ = ["NUM_CLASSES_KEYS", "count_train_images", "num_classes_key", "resolve_cfg", "sr_start_epoch"]

logger = logging.getLogger(__name__)


def count_train_images(cfg: CfgNode) -> int:
    """Images one epoch visits: ``DATASETS.TRAIN`` after the same filtering the train loader applies."""
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    return len(dicts)


#: Class-count keys the plugin resolves from the training set when they are 0, and the meta-architectures that
#: read them (any other meta-architecture is taken to read ROI_HEADS.NUM_CLASSES, like GeneralizedRCNN).
NUM_CLASSES_KEYS = {
    "MODEL.SDCONET.NUM_CLASSES": ("SDCoNet",),
    "MODEL.RETINANET.NUM_CLASSES": ("RetinaNet",),
    "MODEL.ROI_HEADS.NUM_CLASSES": (),
}


def _get(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, key: str, value) -> None:
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[leaf] = value


def num_classes_key(meta_architecture: str) -> str:
    """The class-count key a meta-architecture reads (``MODEL.ROI_HEADS.NUM_CLASSES`` for unknown ones)."""
    for key, archs in NUM_CLASSES_KEYS.items():
        if meta_architecture in archs:
            return key
    return "MODEL.ROI_HEADS.NUM_CLASSES"


def _dataset_classes(cfg: CfgNode, load: bool):
    """(dataset name, thing_classes) of the first train (or test) dataset; classes None when unknown."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        return None, None
    name = names[0]
    meta = MetadataCatalog.get(name)
    classes = meta.get("thing_classes", None)
    if classes is None and load and name in DatasetCatalog.list():
        DatasetCatalog.get(name)  # load_coco_json fills thing_classes lazily
        classes = meta.get("thing_classes", None)
    return name, classes


def _resolve_num_classes(cfg: CfgNode) -> None:
    """Every class-count key that is 0 -> ``len(thing_classes)`` of the first train (or test) dataset.

    Raises only when the key the configured meta-architecture reads cannot be resolved. A key that is set by hand
    but disagrees with the dataset's (already known) class list gets a warning.
    """
    needed = num_classes_key(cfg.MODEL.META_ARCHITECTURE)
    zero = [k for k in NUM_CLASSES_KEYS if _get(cfg, k) == 0]
    name, classes = _dataset_classes(cfg, load=bool(zero))
    if zero:
        if not classes:
            if needed not in zero:
                return
            if name is None:
                raise ValueError(f"{needed} = 0 needs a dataset in DATASETS.TRAIN or DATASETS.TEST")
            raise ValueError(
                f"{needed} = 0 but dataset '{name}' has no thing_classes metadata; "
                f"register it with thing_classes or set {needed}"
            )
        for key in zero:
            _set(cfg, key, len(classes))
    elif classes and _get(cfg, needed) != len(classes):
        logger.warning(
            "%s = %d but dataset '%s' has %d classes %s; set it to 0 to take the dataset's",
            needed,
            _get(cfg, needed),
            name,
            len(classes),
            list(classes),
        )


def _scale_base_lr(cfg: CfgNode) -> None:
    """``SOLVER.BASE_LR_BATCH > 0``: BASE_LR is for that batch -> scale it linearly to IMS_PER_BATCH, set the key 0."""
    s = cfg.SOLVER
    if s.BASE_LR_BATCH < 0:
        raise ValueError(f"SOLVER.BASE_LR_BATCH must be >= 0 (got {s.BASE_LR_BATCH})")
    if s.BASE_LR_BATCH == 0:
        return
    lr = s.BASE_LR * s.IMS_PER_BATCH / s.BASE_LR_BATCH
    logger.info(
        "Linear LR scaling: BASE_LR %g at batch %d -> %g at SOLVER.IMS_PER_BATCH %d",
        s.BASE_LR,
        s.BASE_LR_BATCH,
        lr,
        s.IMS_PER_BATCH,
    )
    s.BASE_LR = lr
    s.BASE_LR_BATCH = 0


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

    * ``MODEL.SDCONET.NUM_CLASSES``, ``MODEL.ROI_HEADS.NUM_CLASSES``, ``MODEL.RETINANET.NUM_CLASSES`` = 0 ->
      ``len(thing_classes)`` of the first train (or test) dataset.
    * ``SOLVER.BASE_LR_BATCH`` > 0 -> ``BASE_LR`` scaled linearly from that batch to ``IMS_PER_BATCH``.
    * the evaluation keys are checked (:func:`sdconet.d2.config.check_eval_config`).
    * the serial variant gets ``SOLVER.SR_START_EPOCH`` 0 (SR trains from the first step; logged when overridden).
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
    _scale_base_lr(cfg)
    s = cfg.SOLVER
    if s.REFERENCE_WORLD_SIZE != 0:
        raise ValueError(
            "SOLVER.REFERENCE_WORLD_SIZE must be 0 for SDCoNet: IMS_PER_BATCH is the total batch and the epoch "
            "recipe is GPU-count independent (auto-scaling would desynchronise the SR stage switch)"
        )
    check_eval_config(cfg)  # headline maxDets vs detections the model returns, protocol/bucket/frame names
    if cfg.MODEL.SDCONET.VARIANT == "serial" and s.SR_START_EPOCH != 0:
        logger.warning(
            "MODEL.SDCONET.VARIANT serial: SOLVER.SR_START_EPOCH %s overridden to 0 -- the serial detector runs on "
            "the SR image, so the SR path trains jointly from the first step (as the authors' serial model); with "
            "a later start it would detect on the output of a frozen, randomly initialised SR decoder",
            s.SR_START_EPOCH,
        )
        s.SR_START_EPOCH = 0
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
        "%s; checkpoint every %d, evaluation every %d iterations",
        n,
        s.IMS_PER_BATCH,
        s.ITERS_PER_EPOCH,
        s.MAX_ITER,
        max_epochs if s.MAX_EPOCHS > 0 else "iteration recipe",
        list(s.STEPS),
        f"SR branch (stage 2) from iteration {s.SR_START_ITER} (epoch {round(sr_start, 3)})"
        if config_has_sr(cfg)
        else "no SR branch",
        s.CHECKPOINT_PERIOD,
        cfg.TEST.EVAL_PERIOD,
    )
    return cfg
