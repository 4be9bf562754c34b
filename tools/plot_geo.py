#!/usr/bin/env python
"""Picture of detections over a georeferenced raster, with map-coordinate axes (matplotlib).

Reads the raster through the same reader as ``tools/predict.py`` (``--bands``, ``--scaling``; a shrunk copy of huge
rasters), the detections from a ``geo/<name>.gpkg`` written by ``predict.py --geo`` (polygons in the raster's CRS),
and optionally the ground truth (COCO boxes in raster pixels, e.g. from ``tools/make_synthetic_geotiff.py --gt``),
drawn dashed. ``--window x0 y0 x1 y1`` (raster pixels) adds a zoomed panel. North-up rasters only.

Example::

    python tools/plot_geo.py --raster geo_demo/scene.tif --bands 3,2,1 \\
        --detections geo_pred/geo/scene.gpkg --gt geo_demo/scenes.json --window 1200 600 1700 1000 --out fig.png
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

from sdconet.data.bands import parse_bands


def read_polygons(path: str) -> tuple[list[np.ndarray], dict[str, np.ndarray], str]:
    """Exterior rings (k, 2) of a GeoPackage/GeoJSON layer, its attribute columns and its CRS."""
    from pyogrio import read_info
    from pyogrio.raw import read

    meta, _, geometry, fields = read(path)[:4]
    rings = []
    for wkb in geometry:
        order = "<" if wkb[0] == 1 else ">"
        (n,) = struct.unpack(order + "I", wkb[9:13])
        rings.append(np.frombuffer(wkb[13 : 13 + 16 * n], dtype=order + "f8").reshape(n, 2))
    return rings, dict(zip(meta["fields"], fields)), read_info(path)["crs"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raster", required=True, help="the georeferenced raster that was predicted")
    p.add_argument("--detections", required=True, help="geo/<name>.gpkg (or .geojson in the raster CRS)")
    p.add_argument("--bands", help="bands shown as R,G,B (as given to predict.py)")
    p.add_argument("--scaling", default="percentile", help="16-bit scaling (as given to predict.py)")
    p.add_argument("--gt", help="COCO ground truth in raster pixels (drawn dashed)")
    p.add_argument("--score-thresh", type=float, default=0.3, help="draw detections with at least this score")
    p.add_argument("--window", type=int, nargs=4, help="x0 y0 x1 y1 (raster pixels) of a zoomed panel")
    p.add_argument("--max-side", type=int, default=1600, help="long side of the raster shown (1600)")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--dpi", type=int, default=110, help="resolution of the PNG (110)")
    p.add_argument("--out", required=True, help="output PNG")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    from sdconet.inference.geo.raster import RasterSource

    source = RasterSource(args.raster, bands=parse_bands(args.bands), scaling=args.scaling)
    georef = source.georef
    if georef is None:
        sys.stderr.write(f"error: {args.raster} is not georeferenced\n")
        return 2
    a, b, c, d, e, f = georef.transform
    if b or d:
        sys.stderr.write("error: plot_geo.py draws north-up rasters only (the transform is rotated)\n")
        return 2
    rings, table, crs = read_polygons(args.detections)
    keep = np.asarray(table.get("score", np.ones(len(rings)))) >= args.score_thresh
    classes = sorted(set(np.asarray(table.get("class_name", ["object"] * len(rings)))[keep]))
    colours = {name: plt.cm.tab10(k % 10) for k, name in enumerate(classes)}
    gt_rings = []
    if args.gt:
        gt = json.loads(Path(args.gt).read_text())
        boxes = np.array([ann["bbox"] for ann in gt["annotations"]], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        gt_rings = list(georef.box_rings(boxes))

    def panel(ax, image, win, linewidth):
        x0, y0, x1, y1 = win
        extent = (c + a * x0, c + a * x1, f + e * y1, f + e * y0)
        ax.imshow(image, extent=extent, interpolation="bilinear" if image.shape[0] < (y1 - y0) else "nearest")
        for ring in gt_rings:
            ax.add_patch(Polygon(ring, closed=True, fill=False, ec="white", lw=linewidth, ls="--", alpha=0.9))
        for ring, ok, name in zip(rings, keep, table.get("class_name", ["object"] * len(rings))):
            if ok:
                ax.add_patch(Polygon(ring, closed=True, fill=False, ec=colours[name], lw=linewidth * 1.4))
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xlabel(f"easting (m), {crs}")
        ax.set_ylabel("northing (m)")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(axis="x", labelrotation=20)

    thumb, _ = source.read_thumbnail(args.max_side)
    ncols = 2 if args.window else 1
    fig, axes = plt.subplots(1, ncols, figsize=(8.5 * ncols, 8.0), squeeze=False)
    panel(axes[0, 0], thumb, (0, 0, source.width, source.height), 0.8)
    if args.window:
        x0, y0, x1, y1 = args.window
        zoom = source.read((x0, y0, x1, y1))
        panel(axes[0, 1], zoom, (x0, y0, x1, y1), 1.6)
        zx0, zx1 = c + a * x0, c + a * x1
        zy0, zy1 = f + e * y1, f + e * y0
        axes[0, 0].add_patch(
            Polygon(
                [(zx0, zy0), (zx1, zy0), (zx1, zy1), (zx0, zy1)], closed=True, fill=False, ec="magenta", lw=1.8
            )
        )
        axes[0, 1].set_title("zoom (magenta frame)")
    handles = [plt.Line2D([], [], color=colours[n], lw=2, label=n) for n in classes]
    if gt_rings:
        handles.append(plt.Line2D([], [], color="grey", lw=1.5, ls="--", label="ground truth"))
    axes[0, 0].legend(handles=handles, loc="lower left", fontsize=9, framealpha=0.85)
    gx, gy = georef.gsd()
    axes[0, 0].set_title(
        f"{Path(args.raster).name}: {source.raster_width} x {source.raster_height} px, GSD {gx:.2g} m, "
        f"{int(keep.sum())} detections >= {args.score_thresh}"
    )
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    source.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
