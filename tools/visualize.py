#!/usr/bin/env python
"""Pictures of one tile: detections, saliency heat maps per level, SR output vs bicubic vs HR, kept tokens.

The tile is cut from each input image at ``--window X Y`` (top-left corner in the image's pixels; default: the tile
in the middle of the image) with the tile size of ``tools/predict.py`` (``--tile``/``--preset``/the training preset). In
``--mode hr`` the HR tile is degraded (x1/s) into the model input, as in training, so the SR picture can show the
HR ground truth and the PSNR; in ``--mode native`` the tile is the model input and no HR exists.

Writes ``<name>_x<X>_y<Y>_{boxes,saliency,sr,kept}.png`` to ``--output`` (pictures the model variant cannot make --
no SR branch, no saliency, no token filtering -- are skipped with a note).

Example::

    python tools/visualize.py --config-file output/quick_synthetic/config.yaml \\
        --weights output/quick_synthetic/model_final.pth --input scene.png --output pictures/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2

from sdconet.data.degradation import degrade
from sdconet.data.errors import DataError, ImageReadError
from sdconet.data.image_io import read_image_rgb, write_image
from sdconet.data.scene_tiles import safe_stem
from sdconet.data.tiler import crop_tile
from sdconet.inference.checkpoint import CheckpointMismatchError
from sdconet.inference.cli import (
    add_model_arguments,
    add_tiling_arguments,
    build_predictor,
    collect_inputs,
    resolve_tiling,
)
from sdconet.inference.visualize import (
    draw_detections,
    kept_tokens_figure,
    panel_size,
    saliency_figure,
    sr_figure,
)

PICTURES = ("boxes", "saliency", "sr", "kept")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, nargs="+", help="image file(s), folder(s) or glob(s)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--window", type=int, nargs=2, metavar=("X", "Y"), help="tile top-left corner (image pixels)")
    p.add_argument(
        "--pictures", nargs="+", choices=PICTURES, default=list(PICTURES), help="what to draw (all)"
    )
    p.add_argument(
        "--score-thresh", type=float, default=0.3, help="draw boxes with at least this score (0.3)"
    )
    add_model_arguments(p)
    add_tiling_arguments(p)
    return p.parse_args(argv)


def _window(width: int, height: int, tile: int, corner) -> tuple[int, int, int, int]:
    """The tile's window, clipped into the image (default: centred)."""
    tile = tile or max(width, height)
    if corner is None:
        x, y = (width - tile) // 2, (height - tile) // 2
    else:
        x, y = corner
    x = int(min(max(x, 0), max(width - tile, 0)))
    y = int(min(max(y, 0), max(height - tile, 0)))
    return x, y, min(x + tile, width), min(y + tile, height)


def run(args: argparse.Namespace) -> int:
    predictor = build_predictor(args)
    mode = args.mode or predictor.default_mode
    tile, _, source = resolve_tiling(args, predictor)
    s = predictor.sr_scale
    step = s if mode == "native" else 1
    out = Path(args.output)
    written, failed = 0, 0
    for path in collect_inputs(args.input):
        try:
            image = read_image_rgb(path, uint16_scaling=args.uint16_scaling)
        except ImageReadError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        height, width = image.shape[:2]
        win = _window(width, height, tile // step, args.window)
        crop = crop_tile(image, win, 0, pad=False)
        lr = degrade(crop, s) if mode == "hr" else crop
        res = predictor.predict(
            [lr],
            return_sr="sr" in args.pictures,
            return_saliency="saliency" in args.pictures,
            return_kept="kept" in args.pictures,
        )[0]
        shown = crop if mode == "hr" else lr  # the pictures are drawn on the HR tile when there is one
        factor = s if mode == "hr" else 1
        stem = f"{safe_stem(path.stem)}_x{win[0]}_y{win[1]}"
        pictures = {}
        if "boxes" in args.pictures:
            big = panel_size(*shown.shape[:2])  # small tiles are enlarged so that labels stay readable
            zoom = big[0] / shown.shape[0]
            canvas = cv2.resize(shown, (big[1], big[0]), interpolation=cv2.INTER_NEAREST)
            pictures["boxes"] = draw_detections(
                canvas,
                res["boxes"] * factor * zoom,
                res["labels"],
                res["scores"],
                predictor.class_names,
                args.score_thresh,
                legend=False,
            )
        if "saliency" in args.pictures:
            if "saliency" in res:
                pictures["saliency"] = saliency_figure(shown, res["saliency"])
            else:
                print(f"{path}: this variant has no saliency maps")
        if "sr" in args.pictures:
            if "sr" in res:
                pictures["sr"] = sr_figure(lr, res["sr"], crop if mode == "hr" else None)
            else:
                print(f"{path}: this variant has no SR branch")
        if "kept" in args.pictures:
            if "kept" in res:
                pictures["kept"] = kept_tokens_figure(shown, res["kept"])
            else:
                print(f"{path}: this variant does not filter tokens")
        for name, picture in pictures.items():
            target = out / f"{stem}_{name}.png"
            write_image(target, picture)
            written += 1
            print(f"{target} ({picture.shape[1]}x{picture.shape[0]})")
        print(
            f"{path}: tile {win} ({source}, mode {mode}), {int((res['scores'] >= args.score_thresh).sum())} boxes"
        )
    print(f"{written} picture(s) written, {failed} unreadable image(s) skipped")
    return 0 if written else 1


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(parse_args(argv))
    except (CheckpointMismatchError, DataError, FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
