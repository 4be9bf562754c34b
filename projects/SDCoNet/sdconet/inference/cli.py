"""Command-line plumbing shared by ``tools/predict.py`` and ``tools/visualize.py`` (argument groups, input
collection, tiling defaults). Nothing here prints; the tools do.
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.cli import add_band_arguments
from ..data.coco_check import parse_json_file
from .dataset_info import DATASET_TILING, class_names_from_coco, dataset_key
from .merge import MATCH_METRICS, MERGE_METHODS, MergeOptions
from .predictor import PRECISIONS, Predictor
from .scene import MODES

__all__ = [
    "IMAGE_EXTENSIONS",
    "add_merge_arguments",
    "add_model_arguments",
    "add_tiling_arguments",
    "build_predictor",
    "collect_inputs",
    "load_json_file",
    "merge_options",
    "parse_overlap",
    "resolve_tiling",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: Overlap (fraction of the tile) when neither a preset nor ``--overlap`` gives one (SAHI's default ratio).
DEFAULT_OVERLAP_RATIO = 0.2


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config-file --weights --device --precision --batch-size --compile --class-names --dataset-json
    --allow-pickle``."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--config-file", required=True, help="yaml config (a run's OUTPUT_DIR/config.yaml or its source)"
    )
    g.add_argument(
        "--weights", required=True, help="checkpoint: detectron2 model_final.pth or a plain state dict"
    )
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    g.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="fp32 or bf16 autocast (default fp32)"
    )
    g.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (default 8)")
    g.add_argument(
        "--compile",
        nargs="?",
        const="on",
        default="off",
        choices=("off", "on", "default", "reduce-overhead", "max-autotune"),
        help="torch.compile the model (one static graph; edge tiles and the last batch are padded to one shape so "
        "it compiles once): on = reduce-overhead (CUDA graphs) on CUDA, default on CPU; off by default",
    )
    g.add_argument(
        "--class-names", help="comma-separated class names (default: checkpoint, then config dataset)"
    )
    g.add_argument("--dataset-json", help="COCO json whose categories name the classes (and give their ids)")
    g.add_argument(
        "--allow-pickle", action="store_true", help="unpickle arbitrary objects (trusted files only)"
    )


def add_tiling_arguments(parser: argparse.ArgumentParser) -> None:
    """``--mode --tile --overlap --preset`` and ``--bands --scaling`` (the dataset tools' flags)."""
    g = parser.add_argument_group("tiling")
    g.add_argument(
        "--mode",
        choices=MODES,
        help="hr: the image is HR, every tile is degraded (x1/s) first; native: the image already is the LR input "
        "(default: from the config's INPUT.LR_MODE: degrade -> hr, real -> native)",
    )
    g.add_argument(
        "--tile",
        type=int,
        help="tile side in HR pixels (native mode cuts tile/s); 0 = whole image in one pass "
        "(default: the training dataset's preset, else the model's input size x s)",
    )
    g.add_argument(
        "--overlap", help="tile overlap: HR pixels (e.g. 200) or a fraction of the tile (e.g. 0.2)"
    )
    g.add_argument("--preset", choices=sorted(DATASET_TILING), help="tile/overlap of a dataset's tiling")
    add_band_arguments(parser.add_argument_group("bands and 16-bit data"))


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    """Merging flags (:class:`~sdconet.inference.merge.MergeOptions`)."""
    d = MergeOptions()
    g = parser.add_argument_group("merging")
    g.add_argument(
        "--merge",
        choices=MERGE_METHODS,
        default=d.method,
        help="nms (default), wbf, nmm, greedynmm (SAHI's merging) or none",
    )
    g.add_argument(
        "--match-metric", choices=MATCH_METRICS, default=d.match_metric, help="iou (default) or ios"
    )
    g.add_argument("--match-thresh", type=float, default=d.match_threshold, help="duplicate threshold (0.5)")
    g.add_argument("--class-agnostic", action="store_true", help="merge boxes of different classes too")
    g.add_argument(
        "--no-border-suppression",
        action="store_true",
        help="keep boxes cut by a tile border even when another tile sees the whole object",
    )
    g.add_argument("--max-dets", type=int, default=0, help="keep at most this many boxes per scene (0 = all)")
    g.add_argument(
        "--full-image",
        action="store_true",
        help="also predict the whole scene shrunk to one tile (large objects)",
    )


def merge_options(args: argparse.Namespace) -> MergeOptions:
    return MergeOptions(
        method=args.merge,
        match_metric=args.match_metric,
        match_threshold=args.match_thresh,
        class_agnostic=args.class_agnostic,
        border_suppression=not args.no_border_suppression,
        max_detections=args.max_dets,
    )


def build_predictor(args: argparse.Namespace, gt_json: str | None = None) -> Predictor:
    """The predictor from the model flags; class names from ``--class-names`` or a COCO json when given."""
    names = None
    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",") if n.strip()]
    elif args.dataset_json or gt_json:
        names = class_names_from_coco(args.dataset_json or gt_json)
    return Predictor.from_files(
        args.config_file,
        args.weights,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        class_names=names,
        allow_pickle=args.allow_pickle,
        compile=getattr(args, "compile", "off"),
    )


def parse_overlap(value: str | None, tile: int) -> int | None:
    """``"200"`` -> 200 px; ``"0.2"`` -> 20 % of ``tile``; None -> None.

    Raises:
        ValueError: not a number, negative, or not smaller than the tile (named ``--overlap``).
    """
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise ValueError(f"--overlap must be pixels or a fraction, got {value!r}") from exc
    pixels = int(round(number * tile)) if 0 < number < 1 else int(number)
    if pixels < 0 or (tile and pixels >= tile) or number != number:
        raise ValueError(f"--overlap {value!r} gives {pixels} px; it must lie in [0, tile={tile})")
    return pixels


def resolve_tiling(args: argparse.Namespace, predictor: Predictor) -> tuple[int, int, str]:
    """``(tile, overlap, where from)`` in HR pixels: flags > ``--preset`` > training dataset > model input size."""
    datasets = predictor.settings.train_datasets if predictor.settings is not None else ()
    key = args.preset or dataset_key(datasets)
    if key is not None:
        tile, overlap = DATASET_TILING[key]
        source = f"preset {key}"
    else:
        side = max(predictor.config.swin.img_size) if predictor.config is not None else 256
        tile = side * predictor.sr_scale
        overlap = int(round(DEFAULT_OVERLAP_RATIO * tile))
        source = "model input size"
    if args.tile is not None:
        if args.tile < 0:
            raise ValueError(f"--tile must be >= 0, got {args.tile}")
        tile, source = args.tile, "--tile"
        overlap = int(round(DEFAULT_OVERLAP_RATIO * tile))
    given = parse_overlap(args.overlap, tile)
    if given is not None:
        overlap = given
    if tile and overlap >= tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    return tile, (overlap if tile else 0), source


def collect_inputs(specs: Sequence[str], recursive: bool = False) -> list[Path]:
    """Image files named by ``specs``: files, folders (images inside; ``recursive`` for sub-folders) or globs.

    Raises:
        FileNotFoundError: a spec matches nothing (the message names it).
    """
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            found += sorted(
                p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        else:
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(
                    f"--input {spec!r}: no such file or folder, and no file matches it as a glob"
                )
            found += matches
    unique, seen = [], set()
    for p in found:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_json_file(path: str | os.PathLike, option: str) -> Any:
    """Parse a JSON file given on the command line.

    Raises:
        CocoFormatError (a ValueError): the file cannot be read or is not valid JSON (the message names the option,
            the file and, for bad JSON, the line and column).
    """
    return parse_json_file(path, f"{option} {str(path)!r}")
