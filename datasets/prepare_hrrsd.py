#!/usr/bin/env python
"""Tile HRRSD into HRRSD-Split (1024 px tiles, overlap 200; images smaller than a tile are zero-padded).

    python datasets/prepare_hrrsd.py --src /path/to/HRRSD --out datasets/hrrsd_split

<src> is the OPT2017 folder (or its parent) with JPEGImages/, Annotations/ (VOC xml) and
ImageSets/Main/. The official division is used: train = trainval, test = test. Without ImageSets the
source images are divided at random (--train-ratio, --seed).
"""

from __future__ import annotations

import argparse
import sys

from sdconet.data.cli import add_tiling_arguments, limit_dataset, new_parser, run_prepare, run_tool
from sdconet.data.readers import read_hrrsd
from sdconet.data.split import split_by_source


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    add = parser.add_argument
    add("--src", required=True, help="HRRSD OPT2017 folder or its parent")
    add("--train-ratio", type=float, default=0.5, help="only without ImageSets (0.5)")
    add("--seed", type=int, default=0, help="only without ImageSets (0)")
    add_tiling_arguments(parser, "hrrsd")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    dataset = limit_dataset(read_hrrsd(args.src, lenient=args.lenient), args.limit)
    if dataset.official_splits is not None:
        splits, info = dataset.official_splits, {"split_method": "official (train = trainval)"}
    else:
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
