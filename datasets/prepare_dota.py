#!/usr/bin/env python
"""Tile DOTA v1.5 (or v1.0) into DOTA1.5-Split (1024 px tiles, overlap 200), horizontal boxes.

    python datasets/prepare_dota.py --src /path/to/DOTA --out datasets/dota15_split

Expected layout (DOTA_devkit's): <src>/train/images/*.png, <src>/train/labelTxt/*.txt and the same for
val/. The official train/val division is kept (DOTA's test labels are not public).
"""

from __future__ import annotations

import argparse
import sys

from sdconet.data.cli import add_tiling_arguments, limit_dataset, new_parser, run_prepare, run_tool
from sdconet.data.readers import read_dota


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    add = parser.add_argument
    add("--src", required=True, help="DOTA root holding one folder per split")
    add("--version", choices=("1.0", "1.5"), default="1.5", help="class list (default 1.5)")
    add("--splits", nargs="+", default=["train", "val"], help="split folders (train val)")
    add("--image-dir", default="images", help="image folder inside a split (images)")
    add("--label-dir", default="labelTxt", help="label folder inside a split (labelTxt)")
    add_tiling_arguments(parser, "dota15")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    dataset = read_dota(args.src, args.version, args.splits, args.image_dir, args.label_dir, args.lenient)
    dataset = limit_dataset(dataset, args.limit)
    info = {"split_method": "official", "version": args.version}
    _, report = run_prepare(dataset, args, dataset.official_splits, info)
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (2 with an ``error:`` line for bad input)."""
    return run_tool(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
