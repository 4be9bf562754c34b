"""Shared command-line plumbing of the ``datasets/prepare_*.py`` tools (argument parsing, running, report).

Nothing here prints: the tools print the report text this module returns.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, Callable, Sequence

from .bands import parse_bands
from .errors import DataError
from .prepare import PrepareResult, TilingOptions, prepare_split_dataset
from .records import SourceDataset
from .scaling import DEFAULT_SCALING, SCALINGS
from .stats import stats_markdown
from .tiler import DEFAULT_MIN_VISIBLE, PRESETS

DEFAULT_WORKERS = max(1, min(8, os.cpu_count() or 1))


def new_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser that keeps the tool docstring's line breaks in ``--help``."""
    formatter = argparse.RawDescriptionHelpFormatter
    return argparse.ArgumentParser(description=description, formatter_class=formatter)


def run_tool(main: Callable[[], int]) -> int:
    """Run a tool body; data errors (bad files or arguments) become one ``error:`` line, exit code 2."""
    try:
        return main()
    except (DataError, FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


def add_tiling_arguments(parser: argparse.ArgumentParser, preset: str) -> None:
    """Add the output, tiling, degradation and run-control flags shared by every prepare tool."""
    tile, overlap = PRESETS[preset]
    parser.add_argument("--out", required=True, help="output root of the split dataset (datasets/README.md)")
    add = parser.add_argument_group("tiling").add_argument
    add("--tile-size", type=int, default=tile, help=f"tile side in HR pixels (preset: {tile})")
    add("--overlap", type=int, default=overlap, help=f"overlap of neighbouring tiles (preset: {overlap})")
    add(
        "--min-visible",
        type=float,
        default=DEFAULT_MIN_VISIBLE,
        help="keep an object cut by a tile border if its visible area fraction is > this (default 0.7)",
    )
    add("--no-pad", action="store_true", help="store small-scene tiles unpadded (default: zero-pad)")
    add("--drop-empty", action="store_true", help="do not write tiles without objects")
    add("--image-format", choices=("png", "jpg"), default="png", help="tile format (default png)")
    add("--jpeg-quality", type=int, default=95, help="quality of jpg tiles (default 95)")
    add_band_arguments(parser.add_argument_group("bands and 16-bit data"))
    add = parser.add_argument_group("LR/HR pairs").add_argument
    add("--lr-scale", type=int, default=2, help="degradation factor for LR statistics/copies (2)")
    add("--write-lr", action="store_true", help="also write bicubic LR copies (<split>/images_lr_x<s>)")
    add = parser.add_argument_group("run control").add_argument
    add("--workers", type=int, default=DEFAULT_WORKERS, help=f"processes (default {DEFAULT_WORKERS})")
    add("--dry-run", action="store_true", help="count tiles/objects only; decode and write nothing")
    add("--skip-existing", action="store_true", help="do not rewrite tile files that already exist")
    add("--lenient", action="store_true", help="skip (and count) unparseable annotation lines")
    add("--limit", type=int, default=None, help="use only the first N source images (quick tests)")
    add(
        "--force",
        action="store_true",
        help="replace an existing dataset in --out even when this run has fewer than half its sources (or none)",
    )
    add("--quiet", action="store_true", help="no progress bar")


def add_band_arguments(group) -> None:
    """``--bands`` and ``--scaling`` (``--uint16-scaling`` is kept as an alias): the same flags, rule and default in
    the dataset tools and ``tools/predict.py`` (:mod:`sdconet.data.bands`, :mod:`sdconet.data.scaling`)."""
    group.add_argument(
        "--bands",
        help="1-based bands shown as R,G,B, e.g. 3,2,1 (one number: grey); needed for rasters with more than 4 "
        "bands or without an RGB colour interpretation",
    )
    group.add_argument(
        "--scaling",
        "--uint16-scaling",
        dest="scaling",
        choices=SCALINGS,
        default=DEFAULT_SCALING,
        help=f"16-bit/float data to 8 bits, per band, statistics once per raster: percentile = 2-98%% stretch "
        f"(default {DEFAULT_SCALING}), full = v/257 (floats: [0,1] or 0-255), none = values as they are",
    )


def options_from_args(args: argparse.Namespace) -> TilingOptions:
    """Build :class:`TilingOptions` from parsed flags."""
    return TilingOptions(
        tile_size=args.tile_size,
        overlap=args.overlap,
        min_visible=args.min_visible,
        pad=not args.no_pad,
        keep_empty=not args.drop_empty,
        image_ext="." + args.image_format,
        jpeg_quality=args.jpeg_quality,
        lr_scale=args.lr_scale,
        write_lr=args.write_lr,
        scaling=args.scaling,
        bands=parse_bands(args.bands),
    )


def limit_dataset(dataset: SourceDataset, limit: int | None) -> SourceDataset:
    """Keep only the first ``limit`` images (sorted by id), and restrict official splits accordingly."""
    if limit is None:
        return dataset
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    images = dataset.images[:limit]
    kept = {im.image_id for im in images}
    official = None
    if dataset.official_splits is not None:
        official = {s: [i for i in ids if i in kept] for s, ids in dataset.official_splits.items()}
    return SourceDataset(
        dataset.name, dataset.class_names, images, official, dataset.issues, dataset.messages
    )


def run_prepare(
    dataset: SourceDataset,
    args: argparse.Namespace,
    splits: dict[str, Sequence[str]],
    split_info: dict[str, Any],
) -> tuple[PrepareResult, str]:
    """Run :func:`prepare_split_dataset` from parsed flags.

    Returns:
        ``(result, report)`` where ``report`` is the text to print (statistics table, problems, timing).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    result = prepare_split_dataset(
        dataset,
        None if args.dry_run else args.out,
        {name: ids for name, ids in splits.items() if ids},
        options_from_args(args),
        workers=args.workers,
        skip_existing=args.skip_existing,
        progress=not args.quiet,
        split_info=split_info,
        force=args.force,
    )
    elapsed = time.perf_counter() - start
    lines = [stats_markdown(result.stats)]
    for item in result.failed:
        lines.append(f"SKIPPED unreadable image {item[0]}: {item[1]}")
    mode = "dry run (nothing written)"
    if not args.dry_run:
        mode = f"wrote {result.written} image files to {args.out}"
    lines.append(f"{mode}; {len(dataset.images)} source images, {args.workers} workers, {elapsed:.1f} s")
    return result, "\n".join(lines)
