#!/usr/bin/env python
"""Tile any COCO-format dataset (bring your own data) into the split layout.

    # one json, divided by source image (70/30, seeded)
    python datasets/prepare_coco.py --json ann.json --image-root images/ --out my_split
    # your own splits
    python datasets/prepare_coco.py --json train=train.json --json test=val.json \\
        --image-root images/ --out my_split

Category names must agree across the jsons; they are renumbered 1..K in id order. Every json is validated first
(sdconet.data.coco_check: duplicate or missing ids, missing keys, bad boxes are errors naming the file and the id);
``--dry-run`` prints what would be renumbered or recomputed and writes nothing.
"""

from __future__ import annotations

import argparse
import sys

from sdconet.data.cli import add_tiling_arguments, limit_dataset, new_parser, run_prepare, run_tool
from sdconet.data.coco_check import load_coco_json
from sdconet.data.readers import read_coco
from sdconet.data.records import SourceDataset
from sdconet.data.split import split_by_source
from sdconet.data.tiler import PRESETS


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    add = parser.add_argument
    add("--json", action="append", required=True, help="PATH or SPLIT=PATH (repeatable)")
    add("--image-root", required=True, help="folder of the json file_name entries")
    add("--name", default="coco", help="dataset name recorded in the statistics")
    add("--preset", choices=sorted(PRESETS), default="nwpu", help="tile/overlap defaults")
    add("--train-ratio", type=float, default=0.7, help="for a single json (0.7)")
    add("--seed", type=int, default=0, help="for a single json (0)")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="nwpu")
    known, _ = pre.parse_known_args(argv)
    add_tiling_arguments(parser, known.preset)
    return parser


def _main(argv: list[str] | None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    named = [j.split("=", 1) for j in args.json if "=" in j]
    if named and len(named) != len(args.json):
        parser.error("either name every --json (SPLIT=PATH) or give a single unnamed one")
    if args.dry_run:  # what the reader will renumber or recompute
        for path in [p for _, p in named] or args.json:
            print(load_coco_json(path, image_root=args.image_root, lenient=args.lenient)[1].describe())
    if not named:
        if len(args.json) != 1:
            parser.error("several --json files need split names (SPLIT=PATH)")
        dataset = limit_dataset(read_coco(args.json[0], args.image_root, args.name, args.lenient), args.limit)
        splits = split_by_source([im.image_id for im in dataset.images], args.train_ratio, args.seed)
        info = {"split_method": "random by source image", "train_ratio": args.train_ratio, "seed": args.seed}
    else:
        parts = {split: read_coco(path, args.image_root, args.name, args.lenient) for split, path in named}
        classes = {p.class_names for p in parts.values()}
        if len(classes) != 1:
            parser.error(f"the jsons disagree on the categories: {sorted(classes)}")
        images = sorted((im for p in parts.values() for im in p.images), key=lambda im: im.image_id)
        splits = {split: [im.image_id for im in p.images] for split, p in parts.items()}
        dataset = limit_dataset(SourceDataset(args.name, classes.pop(), images, splits), args.limit)
        splits = dataset.official_splits
        info = {"split_method": "given by the input jsons"}
    _, report = run_prepare(dataset, args, splits, info)
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (2 with an ``error:`` line for bad input)."""
    return run_tool(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
