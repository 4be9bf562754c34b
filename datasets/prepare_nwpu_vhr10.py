#!/usr/bin/env python
"""Tile NWPU VHR-10 into the paper's NWPU VHR-10-Split (512 px tiles, overlap 200, > 0.7 visible rule).

    python datasets/prepare_nwpu_vhr10.py --src /path/to/nwpu_vhr10 --out datasets/nwpu_vhr10_split

The source folder holds positive_image_set/, ground_truth/ (and optionally negative_image_set/).
The train/test division is by source image, seeded (default 70/30, seed 0). With the defaults the
650 positive images give 3,631 tiles and 10,389 objects (the paper's Table I). See datasets/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from sdconet.data.cli import add_tiling_arguments, limit_dataset, new_parser, run_prepare, run_tool
from sdconet.data.readers import read_nwpu_vhr10
from sdconet.data.split import split_by_source


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    add = parser.add_argument
    add(
        "--src",
        default=os.environ.get("NWPU_VHR10_ROOT"),
        help="NWPU VHR-10 root (default: $NWPU_VHR10_ROOT)",
    )
    add("--train-ratio", type=float, default=0.7, help="fraction of sources in train (0.7)")
    add("--seed", type=int, default=0, help="seed of the source-image split (0)")
    add("--include-negative", action="store_true", help="also tile negative_image_set")
    add_tiling_arguments(parser, "nwpu")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not args.src:
        build_parser().error("--src is required (or set NWPU_VHR10_ROOT)")
    dataset = read_nwpu_vhr10(args.src, include_negative=args.include_negative, lenient=args.lenient)
    dataset = limit_dataset(dataset, args.limit)
    splits = split_by_source([im.image_id for im in dataset.images], args.train_ratio, args.seed)
    info = {"split_method": "random by source image", "train_ratio": args.train_ratio, "seed": args.seed}
    _, report = run_prepare(dataset, args, splits, info)
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (2 with an ``error:`` line for bad input)."""
    return run_tool(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
