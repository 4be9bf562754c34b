"""Named suites: the paper's comparison tables as lists of configs, at the paper's size or the CPU-scale preset.

Config paths are relative to ``projects/SDCoNet/configs``. ``paper`` = the full-size recipe (ImageNet Swin-T, 52
epochs); ``cpu`` = ``configs/cpu/`` (reduced widths, from scratch, 3-epoch budget; all variants of a suite share
widths and recipe and differ only in the ablated switch). The detectron2 baselines of Tables II and V exist at the
paper size only (each with its own detector's recipe, ``configs/baselines/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

__all__ = ["CONFIG_DIR", "SIZES", "SUITES", "suite_specs"]

#: projects/SDCoNet/configs
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SIZES = ("paper", "cpu")

#: suite -> (description, [(label, {size: config path})])
SUITES: Dict[str, Tuple[str, List[Tuple[str, Dict[str, str]]]]] = {
    "table6": (
        "Table VI: contribution of the components (NWPU VHR-10-Split)",
        [
            ("DINO", {"paper": "ablations/dino_swinT_x2_nwpu.yaml", "cpu": "cpu/dino_cpu_nwpu.yaml"}),
            (
                "DINO+saliency",
                {
                    "paper": "ablations/dino_saliency_swinT_x2_nwpu.yaml",
                    "cpu": "cpu/dino_saliency_cpu_nwpu.yaml",
                },
            ),
            (
                "DINO+SR",
                {"paper": "ablations/dino_sr_swinT_x2_nwpu.yaml", "cpu": "cpu/dino_sr_cpu_nwpu.yaml"},
            ),
            ("SDCoNet", {"paper": "sdconet_swinT_x2_nwpu.yaml", "cpu": "cpu/sdconet_cpu_nwpu.yaml"}),
        ],
    ),
    "table2": (
        "Table II: detectron2's detectors and SDCoNet on the x2-degraded NWPU VHR-10-Split (ResNet-50 FPN baselines)",
        [
            ("Faster R-CNN (R50)", {"paper": "baselines/faster_rcnn_R50_FPN_x2_nwpu.yaml"}),
            ("RetinaNet (R50)", {"paper": "baselines/retinanet_R50_FPN_x2_nwpu.yaml"}),
            ("Cascade R-CNN (R50)", {"paper": "baselines/cascade_rcnn_R50_FPN_x2_nwpu.yaml"}),
            ("SDCoNet", {"paper": "sdconet_swinT_x2_nwpu.yaml", "cpu": "cpu/sdconet_cpu_nwpu.yaml"}),
        ],
    ),
    "table5": (
        "Table V: the SR branch added to Cascade R-CNN and to DINO (NWPU VHR-10-Split)",
        [
            ("Cascade R-CNN", {"paper": "baselines/cascade_rcnn_R50_FPN_x2_nwpu.yaml"}),
            ("Cascade R-CNN + SR", {"paper": "baselines/cascade_rcnn_R50_FPN_sr_x2_nwpu.yaml"}),
            ("DINO", {"paper": "ablations/dino_swinT_x2_nwpu.yaml", "cpu": "cpu/dino_cpu_nwpu.yaml"}),
            (
                "DINO + SR",
                {"paper": "ablations/dino_sr_swinT_x2_nwpu.yaml", "cpu": "cpu/dino_sr_cpu_nwpu.yaml"},
            ),
        ],
    ),
    "table7": (
        "Table VII: the saliency modulation coefficient alpha (NWPU VHR-10-Split)",
        [
            (
                "alpha removed",
                {"paper": "ablations/alpha_none_nwpu.yaml", "cpu": "cpu/alpha_none_cpu_nwpu.yaml"},
            ),
            (
                "alpha fixed 0.5",
                {"paper": "ablations/alpha_fixed_nwpu.yaml", "cpu": "cpu/alpha_fixed_cpu_nwpu.yaml"},
            ),
            ("alpha learnable", {"paper": "sdconet_swinT_x2_nwpu.yaml", "cpu": "cpu/sdconet_cpu_nwpu.yaml"}),
        ],
    ),
    "table9": (
        "Table IX: hierarchical token filtering (NWPU VHR-10-Split)",
        [
            ("none", {"paper": "ablations/filter_none_nwpu.yaml", "cpu": "cpu/filter_none_cpu_nwpu.yaml"}),
            ("layer", {"paper": "ablations/filter_layer_nwpu.yaml", "cpu": "cpu/filter_layer_cpu_nwpu.yaml"}),
            ("level", {"paper": "ablations/filter_level_nwpu.yaml", "cpu": "cpu/filter_level_cpu_nwpu.yaml"}),
            ("joint", {"paper": "sdconet_swinT_x2_nwpu.yaml", "cpu": "cpu/sdconet_cpu_nwpu.yaml"}),
        ],
    ),
}


def suite_specs(suite: str, size: str, config_dir: Path = CONFIG_DIR) -> List[Tuple[str, Path]]:
    """``[(label, config path)]`` of a suite at a size.

    Raises:
        ValueError: unknown suite or size, or a config of the suite missing from this checkout (named).
    """
    if suite not in SUITES:
        raise ValueError(f"--suite: unknown suite {suite!r}; known: {sorted(SUITES)}")
    if size not in SIZES:
        raise ValueError(f"--size: unknown size {size!r}; known: {list(SIZES)}")
    out = []
    for label, by_size in SUITES[suite][1]:
        if size not in by_size:
            raise ValueError(
                f"suite {suite!r} has no {size!r} config for {label!r} (sizes: {sorted(by_size)}; try --size paper)"
            )
        path = Path(config_dir) / by_size[size]
        if not path.is_file():
            raise ValueError(f"suite {suite!r}: config of {label!r} not found: {path}")
        out.append((label, path))
    return out
