#!/usr/bin/env python
"""Write the synthetic demo dataset (aerial-like tiles with vehicles, planes and tanks) in the split layout.

    python datasets/make_synthetic.py                      # into the default cache folder
    python datasets/make_synthetic.py --out /tmp/synthetic --num-train 200 --num-test 50

No download needed: the quick-schedule config, the tests and the README's first command use it.
"""

from __future__ import annotations

import argparse
import sys
import time

from sdconet.data.cli import new_parser, run_tool
from sdconet.data.synthetic import (
    DEFAULT_NUM_TEST,
    DEFAULT_NUM_TRAIN,
    default_synthetic_root,
    make_synthetic_split,
)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    add = parser.add_argument
    add("--out", default=None, help=f"output root (default {default_synthetic_root()})")
    add("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help=f"train tiles ({DEFAULT_NUM_TRAIN})")
    add("--num-test", type=int, default=DEFAULT_NUM_TEST, help=f"test tiles ({DEFAULT_NUM_TEST})")
    add("--tile-size", type=int, default=128, help="HR tile side (128; LR is half)")
    add("--seed", type=int, default=0, help="seed (0)")
    add("--min-object-size", type=int, default=8, help="smallest object side, HR px (8)")
    add("--max-object-size", type=int, default=60, help="largest object side, HR px (60)")
    add("--lr-scale", type=int, default=2, help="degradation factor (2)")
    add("--write-lr", action="store_true", help="also write LR copies")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or default_synthetic_root()
    start = time.perf_counter()
    paths = make_synthetic_split(
        out,
        num_train=args.num_train,
        num_test=args.num_test,
        tile_size=args.tile_size,
        seed=args.seed,
        min_object_size=args.min_object_size,
        max_object_size=args.max_object_size,
        lr_scale=args.lr_scale,
        write_lr=args.write_lr,
    )
    with open(paths["stats_md"], encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (2 with an ``error:`` line for bad input)."""
    return run_tool(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
