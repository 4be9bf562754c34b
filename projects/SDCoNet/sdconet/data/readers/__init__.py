"""Readers that turn each supported dataset format into a :class:`sdconet.data.records.SourceDataset`."""

from .coco import read_coco
from .dota import DOTA10_CLASSES, DOTA15_CLASSES, read_dota
from .hrrsd import HRRSD_CLASSES, read_hrrsd
from .nwpu import NWPU_VHR10_CLASSES, read_nwpu_vhr10

__all__ = [
    "DOTA10_CLASSES",
    "DOTA15_CLASSES",
    "HRRSD_CLASSES",
    "NWPU_VHR10_CLASSES",
    "read_coco",
    "read_dota",
    "read_hrrsd",
    "read_nwpu_vhr10",
]
