#!/usr/bin/env python
"""Write large synthetic scenes (mosaics of the synthetic dataset's tiles) and their whole-scene ground truth.

Outputs in ``--out``: ``scene_000.png``, ``scene_001.png``, ... and ``scenes.json`` (COCO, boxes in scene pixels,
the layout of a split dataset's ``annotations/scenes_<split>.json``), ready for::

    python tools/predict.py ... --input <out> --gt <out>/scenes.json

Example::

    python tools/make_synthetic_scene.py --out demo_scenes --size 2000 --num 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdconet.data.atomic import atomic_write_json
from sdconet.data.image_io import write_image
from sdconet.inference.synthetic_scene import DEFAULT_CELL, make_synthetic_scene, scenes_ground_truth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--size", type=int, nargs="+", default=[2000], help="scene side, or width height (default 2000)"
    )
    p.add_argument("--num", type=int, default=1, help="number of scenes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene; scene k uses seed + k")
    p.add_argument(
        "--cell", type=int, default=DEFAULT_CELL, help=f"mosaic cell side (default {DEFAULT_CELL})"
    )
    args = p.parse_args(argv)
    if len(args.size) not in (1, 2) or min(args.size) < 1:
        sys.stderr.write(f"error: --size takes one or two positive integers, got {args.size}\n")
        return 2
    width, height = (args.size * 2)[:2]
    out = Path(args.out)
    scenes, names = [], []
    for k in range(args.num):
        scene = make_synthetic_scene(width, height, seed=args.seed + k, cell=args.cell)
        name = f"scene_{k:03d}.png"
        write_image(out / name, scene.image)
        scenes.append(scene)
        names.append(name)
        print(f"{out / name}: {width}x{height}, {len(scene.boxes)} objects")
    atomic_write_json(out / "scenes.json", scenes_ground_truth(scenes, names), indent=1)
    print(f"{out / 'scenes.json'}: whole-scene ground truth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
