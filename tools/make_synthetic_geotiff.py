#!/usr/bin/env python
"""Write a georeferenced synthetic GeoTIFF: a mosaic of the synthetic dataset's tiles as a 4-band uint16 raster.

What a real multispectral product looks like to ``tools/predict.py``: bands blue, green, red, near-infrared (so
``--bands 3,2,1`` shows true colour; the bands have no RGB colour interpretation, as in most such products), 12-bit
values in uint16 (``16 * v + 64``; ``--scaling percentile``, the default, restores the contrast), a projected CRS
(UTM zone 33N by default) at ``--gsd`` metres per pixel, a nodata (0) border of ``--nodata-border`` pixels on the top
and left, tiled and DEFLATE-compressed, optionally with overviews (``--overviews``: a cloud-optimised layout).

The raster is written block by block (``--block`` pixels a side; memory does not grow with ``--size``), each block a
synthetic scene of its own seed, or one block repeated (``--repeat``, fast, for memory benchmarks of huge rasters);
``--sparse 0.1`` writes only every tenth block (the rest is nodata, as in a scene with large empty areas).
``--gt`` writes the whole-scene COCO ground truth in raster pixels (for ``tools/predict.py --gt``).

Example::

    python tools/make_synthetic_geotiff.py --out geo_demo/scene.tif --size 2400 2000 --gt geo_demo/scenes.json
    python tools/make_synthetic_geotiff.py --out /tmp/big.tif --size 20000 --repeat --sparse 0.1  # 20,000^2 x 4 x uint16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from sdconet.data.atomic import atomic_write_json
from sdconet.inference.synthetic_scene import (
    DEFAULT_CELL,
    SyntheticScene,
    make_synthetic_scene,
    scenes_ground_truth,
)


def to_multispectral(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (4, h, w) uint16 blue, green, red, NIR in 12-bit range (16 v + 64)."""
    r, g, b = (rgb[..., k].astype(np.uint16) for k in range(3))
    nir = ((g.astype(np.uint32) + 2 * r) // 3).astype(np.uint16)
    return np.stack([b, g, r, nir]) * 16 + 64


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output GeoTIFF")
    p.add_argument("--size", type=int, nargs="+", default=[2000], help="side, or width height (2000)")
    p.add_argument("--gsd", type=float, default=0.5, help="metres per pixel (0.5)")
    p.add_argument("--crs", default="EPSG:32633", help="projected CRS (EPSG:32633, UTM zone 33N)")
    p.add_argument(
        "--origin", type=float, nargs=2, default=[400000.0, 5000000.0], help="map x, y of the top-left corner"
    )
    p.add_argument("--nodata-border", type=int, default=48, help="nodata pixels on the top and left (48)")
    p.add_argument("--block", type=int, default=2048, help="side of the blocks written one at a time (2048)")
    p.add_argument("--repeat", action="store_true", help="repeat the first block everywhere (fast)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first block; block k uses seed + k")
    p.add_argument("--cell", type=int, default=DEFAULT_CELL, help=f"mosaic cell side ({DEFAULT_CELL})")
    p.add_argument(
        "--sparse",
        type=float,
        default=1.0,
        help="fraction of the blocks that hold data (1.0); the others are never written (a sparse GeoTIFF: "
        "they take no disk space and read as nodata)",
    )
    p.add_argument("--overviews", action="store_true", help="add internal overviews (2, 4, 8, ...)")
    p.add_argument("--gt", help="also write the whole-scene COCO ground truth here")
    args = p.parse_args(argv)
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if len(args.size) not in (1, 2) or min(args.size) < 1:
        sys.stderr.write(f"error: --size takes one or two positive integers, got {args.size}\n")
        return 2
    width, height = (args.size * 2)[:2]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 4,
        "dtype": "uint16",
        "crs": args.crs,
        "transform": from_origin(args.origin[0], args.origin[1], args.gsd, args.gsd),
        "nodata": 0,
        "photometric": "MINISBLACK",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "DEFLATE",
        "predictor": 2,
        "BIGTIFF": "IF_SAFER",
        "SPARSE_OK": "TRUE",
    }
    if not 0 < args.sparse <= 1:
        sys.stderr.write(f"error: --sparse must lie in (0, 1], got {args.sparse}\n")
        return 2
    every = max(1, round(1 / args.sparse))
    t0 = time.perf_counter()
    boxes, labels = [], []
    border = args.nodata_border
    cached: SyntheticScene | None = None
    tmp = out.with_name(f".{out.name}.tmp")
    with rasterio.open(tmp, "w", **profile) as ds:
        ds.update_tags(AREA_OR_POINT="Area")
        for i, y0 in enumerate(range(0, height, args.block)):
            for j, x0 in enumerate(range(0, width, args.block)):
                if (i * 3 + j) % every:
                    continue  # sparse: this block stays nodata
                w, h = min(args.block, width - x0), min(args.block, height - y0)
                if args.repeat:
                    if cached is None:
                        cached = make_synthetic_scene(args.block, args.block, seed=args.seed, cell=args.cell)
                    scene = SyntheticScene(
                        cached.image[:h, :w], cached.boxes, cached.labels, cached.class_names
                    )
                    keep = (scene.boxes[:, 2] <= w) & (scene.boxes[:, 3] <= h)
                    scene = SyntheticScene(
                        scene.image, scene.boxes[keep], scene.labels[keep], scene.class_names
                    )
                else:
                    k = i * (-(-width // args.block)) + j
                    scene = make_synthetic_scene(w, h, seed=args.seed + k, cell=args.cell)
                data = to_multispectral(scene.image)
                if y0 < border:
                    data[:, : border - y0] = 0
                if x0 < border:
                    data[:, :, : border - x0] = 0
                ds.write(data, window=Window(x0, y0, w, h))
                if args.gt:
                    b = scene.boxes + [x0, y0, x0, y0]
                    visible = (b[:, 0] >= border) & (b[:, 1] >= border)
                    boxes.append(b[visible])
                    labels.append(scene.labels[visible])
        if args.overviews:
            factors = [f for f in (2, 4, 8, 16, 32, 64) if max(width, height) // f >= 256]
            ds.build_overviews(factors, Resampling.average)
    tmp.replace(out)
    print(
        f"{out}: {width}x{height} x 4 uint16 (blue, green, red, NIR), {args.crs}, GSD {args.gsd} m, "
        f"{out.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f} s"
    )
    if args.gt:
        all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        image = np.zeros((height, width, 0), np.uint8)  # only the size is used
        names = cached.class_names if cached is not None else scene.class_names
        gt = scenes_ground_truth([SyntheticScene(image, all_boxes, all_labels, names)], [out.name])
        atomic_write_json(args.gt, gt, indent=1)
        print(f"{args.gt}: {len(all_boxes)} objects (whole-scene COCO ground truth)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
