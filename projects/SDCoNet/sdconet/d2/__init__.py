"""detectron2 adapter of SDCoNet: config keys, meta-architecture, mapper, dataset registration, trainer, hooks.

Importing this package registers the meta-architecture ``SDCoNet`` in ``META_ARCH_REGISTRY`` and the split datasets
(root: ``$SDCONET_DATASETS``, default ``./datasets``) plus the embedded synthetic demo dataset.
"""

from .config import add_sdconet_config, get_sdconet_cfg, sdconet_config_from_cfg, setup_cfg
from .datasets import register_sdconet_datasets, register_split_dataset
from .hooks import SRStageHook, TrainingStatsHook
from .mapper import SDCoNetDatasetMapper
from .meta_arch import SDCoNet
from .schedule import resolve_cfg
from .solver import build_sdconet_optimizer, core_of
from .sr_evaluator import SREvaluator
from .trainer import SDCoNetTrainer

__all__ = [
    "SDCoNet",
    "SDCoNetDatasetMapper",
    "SDCoNetTrainer",
    "SREvaluator",
    "SRStageHook",
    "TrainingStatsHook",
    "add_sdconet_config",
    "build_sdconet_optimizer",
    "core_of",
    "get_sdconet_cfg",
    "register_sdconet_datasets",
    "register_split_dataset",
    "resolve_cfg",
    "sdconet_config_from_cfg",
    "setup_cfg",
]

register_sdconet_datasets()  # import-time registration (idempotent; root from $SDCONET_DATASETS)
