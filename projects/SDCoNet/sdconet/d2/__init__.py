"""detectron2 adapter of SDCoNet: config keys, meta-architecture, mapper, dataset registration, trainer, hooks.

Importing this package registers the meta-architecture ``SDCoNet`` in ``META_ARCH_REGISTRY``, the Swin-T backbones
for detectron2's own detectors in ``BACKBONE_REGISTRY`` (``build_sdconet_swin_*backbone``) and the split datasets
(root: ``$SDCONET_DATASETS``, default ``./datasets``) plus the embedded synthetic demo dataset. The SR branch as an
add-on to any detectron2 detector is in :mod:`sdconet.d2.sr_branch` (``MODEL.SR_BRANCH.ENABLED``).
"""

from .config import (
    add_sdconet_config,
    config_has_sr,
    get_sdconet_cfg,
    load_cfg,
    recipe_for,
    sdconet_config_from_cfg,
    setup_cfg,
)
from .datasets import register_sdconet_datasets, register_split_dataset
from .hooks import SRStageHook, TrainingStatsHook, sr_controller
from .mapper import SDCoNetDatasetMapper
from .meta_arch import SDCoNet
from .schedule import resolve_cfg
from .solver import build_optimizer, build_sdconet_optimizer, core_of
from .sr_branch import SRAugmented, build_model, stock_state_dict, with_sr_branch
from .sr_evaluator import SREvaluator
from .swin_backbone import SwinBackbone
from .trainer import SDCoNetTrainer

__all__ = [
    "SDCoNet",
    "SDCoNetDatasetMapper",
    "SDCoNetTrainer",
    "SRAugmented",
    "SREvaluator",
    "SRStageHook",
    "SwinBackbone",
    "TrainingStatsHook",
    "add_sdconet_config",
    "build_model",
    "build_optimizer",
    "build_sdconet_optimizer",
    "config_has_sr",
    "core_of",
    "get_sdconet_cfg",
    "load_cfg",
    "recipe_for",
    "register_sdconet_datasets",
    "register_split_dataset",
    "resolve_cfg",
    "sdconet_config_from_cfg",
    "setup_cfg",
    "sr_controller",
    "stock_state_dict",
    "with_sr_branch",
]

register_sdconet_datasets()  # import-time registration (idempotent; root from $SDCONET_DATASETS)
