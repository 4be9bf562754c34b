#!/usr/bin/env python
"""Pictures of one tile: detections, saliency heat maps per level, SR output vs bicubic vs HR, kept tokens.

The tile is cut from each input image at ``--window X Y`` (top-left corner in the image's pixels; default: the tile
in the middle of the image) with the tile size of ``tools/predict.py`` (``--tile``/``--preset``/the training preset). In
``--mode hr`` the HR tile is degraded (x1/s) into the model input, as in training, so the SR picture can show the
HR ground truth and the PSNR; in ``--mode native`` the tile is the model input and no HR exists.

Writes ``<name>_x<X>_y<Y>_{boxes,saliency,sr,kept}.png`` to ``--output`` (pictures the model variant cannot make --
no SR branch, no saliency, no token filtering -- are skipped with a note).

Same reliability policy as ``tools/predict.py``: the output folder is checked before any work; pictures of these
inputs already in it are replaced only with ``--overwrite`` (``--resume`` skips the inputs whose pictures exist); an
input that cannot be read or drawn is named, counted and skipped. Exit status: 0 all inputs drawn; 2 nothing started
(bad argument, config, checkpoint or output folder); 3 some inputs failed; 4 none could be drawn; 130 / 143
interrupted (every picture written so far is complete).

Example::

    python tools/visualize.py --config-file output/quick_synthetic/config.yaml \\
        --weights output/quick_synthetic/model_final.pth --input scene.png --output pictures/
"""

from __future__ import annotations

import argparse
import logging
import sys

import cv2

from sdconet.data.bands import parse_bands
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
from sdconet.inference.run_policy import (
    ExitCode,
    Interrupted,
    exit_code_for,
    interruptible,
    prepare_output_dir,
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
    p.add_argument(
        "--window", type=int, nargs=2, metavar=("X", "Y"), help="tile top-left corner (image pixels)"
    )
    p.add_argument(
        "--pictures", nargs="+", choices=PICTURES, default=list(PICTURES), help="what to draw (all)"
    )
    p.add_argument(
        "--score-thresh", type=float, default=0.3, help="draw boxes with at least this score (0.3)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace pictures of these inputs already in --output"
    )
    p.add_argument("--resume", action="store_true", help="skip inputs whose pictures are already in --output")
    add_model_arguments(p)
    add_tiling_arguments(p)
    return p.parse_args(argv)


def picture_patterns(path, pictures) -> list[str]:
    """Glob patterns of the pictures an input gives (any window)."""
    return [f"{safe_stem(path.stem)}_x*_y*_{name}.png" for name in pictures]


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
    """Check everything (errors: exit 2, nothing written), then draw every input (:func:`draw_all`)."""
    try:
        inputs = collect_inputs(args.input)
        if not inputs:
            raise FileNotFoundError(f"--input {' '.join(args.input)}: no image files found")
        patterns = [q for path in inputs for q in picture_patterns(path, args.pictures)]
        out, _ = prepare_output_dir(
            args.output, previous_outputs=patterns, resume=args.resume, overwrite=args.overwrite
        )
        predictor = build_predictor(args)
        mode = args.mode or predictor.default_mode
        tile, _, source = resolve_tiling(args, predictor)
    except (CheckpointMismatchError, DataError, FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return int(ExitCode.SETUP_ERROR)
    todo = inputs
    if args.resume:
        todo = [p for p in inputs if not all(any(out.glob(q)) for q in picture_patterns(p, args.pictures))]
        if len(todo) < len(inputs):
            print(f"--resume: {len(inputs) - len(todo)} input(s) already drawn")
    done, failed = len(inputs) - len(todo), []
    with interruptible():
        try:
            for path in todo:
                try:
                    draw_one(args, predictor, path, mode, tile, source, out)
                    done += 1
                except Exception as exc:  # noqa: BLE001 - one input fails, the run goes on
                    stage = "open" if isinstance(exc, ImageReadError) else "draw"
                    print(f"failed: {path} ({stage}): {exc}", file=sys.stderr)
                    failed.append(str(path))
        except Interrupted as exc:
            print(f"{exc}: {done} input(s) drawn, {len(failed)} failed; rerun with --resume to finish")
            return exc.exit_code
    print(f"{done} input(s) drawn, {len(failed)} failed" + (f": {', '.join(failed[:10])}" if failed else ""))
    return exit_code_for(done, len(failed))


def draw_one(args, predictor, path, mode: str, tile: int, source: str, out) -> None:
    """All requested pictures of one input."""
    s = predictor.sr_scale
    step = s if mode == "native" else 1
    image = read_image_rgb(path, args.scaling, parse_bands(args.bands))
    height, width = image.shape[:2]
    if mode == "hr" and min(height, width) < s:
        raise ValueError(f"a {width}x{height} image is smaller than the SR factor {s}")
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
        print(f"{target} ({picture.shape[1]}x{picture.shape[0]})")
    print(
        f"{path}: tile {win} ({source}, mode {mode}), {int((res['scores'] >= args.score_thresh).sum())} boxes"
    )


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
