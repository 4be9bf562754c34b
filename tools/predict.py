#!/usr/bin/env python
"""Whole-scene (sliced) prediction with a trained SDCoNet: every object of large images, in scene coordinates.

Each image is cut into the dataset tiler's tiles (the training preset by default), every tile is predicted (in
``--mode hr`` after the same x1/s degradation as in training; in ``--mode native`` the image already is the
low-quality input and tiles are tile/s pixels), boxes are mapped back to the scene and merged across overlaps
(class-wise NMS by default; WBF with ``--merge wbf``; boxes cut by a tile border are dropped when another tile sees
the whole object). Tiles are streamed in batches, so memory does not grow with the scene size beyond the image itself.

Outputs in ``--output``:

* ``results.json``: COCO results ``[{image_id, category_id, bbox: [x, y, w, h], score}]`` in scene pixels;
* ``images.json``: the images (``id``, ``file_name`` = input path, ``width``, ``height``) and ``categories``;
* ``vis/<name>.png``: the scene with boxes, class names and scores (``--no-vis`` to skip);
* ``summary.json``: settings and counts (images done / unreadable, tiles, detections, time);
* with ``--gt scenes.json``: image ids are the ground truth's (matched by file name) and ``scene_eval.json`` holds
  the scene-level COCO AP, also printed (see ``tools/evaluate_scenes.py``).

Unreadable images are reported and skipped; the run continues and the summary counts them.

Example::

    python tools/predict.py --config-file output/quick_synthetic/config.yaml \\
        --weights output/quick_synthetic/model_final.pth --input scenes/ --output predictions/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from sdconet.data.atomic import atomic_write_json
from sdconet.data.errors import DataError, ImageReadError
from sdconet.data.image_io import read_image_rgb, write_image
from sdconet.data.scene_tiles import safe_stem
from sdconet.inference.checkpoint import CheckpointMismatchError
from sdconet.inference.cli import (
    add_merge_arguments,
    add_model_arguments,
    add_tiling_arguments,
    build_predictor,
    collect_inputs,
    merge_options,
    resolve_tiling,
)
from sdconet.inference.coco_results import category_ids_for, detections_to_coco, match_image_ids
from sdconet.inference.scene import predict_scene, scene_windows
from sdconet.inference.scene_eval import DEFAULT_MAX_DETS, evaluate_scenes, format_report
from sdconet.inference.visualize import draw_detections

logger = logging.getLogger("predict")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, nargs="+", help="image file(s), folder(s) or glob(s)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--recursive", action="store_true", help="also read images in sub-folders of a folder input"
    )
    add_model_arguments(p)
    add_tiling_arguments(p)
    add_merge_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("--score-thresh", type=float, default=0.05, help="drop detections below this score (0.05)")
    g.add_argument("--no-vis", action="store_true", help="do not write annotated PNGs")
    g.add_argument("--vis-thresh", type=float, default=0.3, help="draw boxes with at least this score (0.3)")
    g.add_argument("--no-labels", action="store_true", help="draw boxes without class names and scores")
    g.add_argument(
        "--gt",
        help="whole-scene COCO ground truth (annotations/scenes_<split>.json): use its image ids "
        "and category ids, and evaluate at the end",
    )
    g.add_argument(
        "--eval-max-dets",
        type=int,
        nargs="+",
        default=list(DEFAULT_MAX_DETS),
        help="maxDets reported by the evaluation (default 100 1000)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _vis_name(path: Path, used: set[str]) -> str:
    name = safe_stem(path.stem)
    candidate, k = name, 1
    while candidate in used:
        k += 1
        candidate = f"{name}_{k}"
    used.add(candidate)
    return candidate + ".png"


def run(args: argparse.Namespace) -> int:
    inputs = collect_inputs(args.input, args.recursive)
    if not inputs:
        raise FileNotFoundError(f"--input {' '.join(args.input)}: no image files found")
    gt = json.loads(Path(args.gt).read_text(encoding="utf-8")) if args.gt else None
    predictor = build_predictor(args, gt_json=args.gt)
    mode = args.mode or predictor.default_mode
    tile, overlap, tiling_source = resolve_tiling(args, predictor)
    options = merge_options(args)
    category_ids = category_ids_for(predictor.num_classes, gt if gt else _json_or_none(args.dataset_json))
    gt_ids = match_image_ids(gt, [str(p) for p in inputs]) if gt else {}
    next_id = max([int(i["id"]) for i in (gt or {}).get("images", [])] + [0]) + 1
    out_dir = Path(args.output)
    vis_dir = out_dir / "vis"
    print(
        f"{len(inputs)} input(s); mode {mode}; tile {tile or 'whole image'} / overlap {overlap} HR px ({tiling_source}); "
        f"scale x{predictor.sr_scale}; merge {options.method}/{options.match_metric}>{options.match_threshold}; "
        f"device {predictor.device} {predictor.precision}; classes: {', '.join(predictor.class_names)}"
    )
    results, images, failed, unmatched, used_names = [], [], [], [], set()
    totals = {"tiles": 0, "raw": 0, "detections": 0, "megapixels": 0.0}
    t0 = time.perf_counter()
    bar = tqdm(inputs, desc="scenes", unit="img", disable=args.quiet)
    for path in bar:
        try:
            image = read_image_rgb(path, uint16_scaling=args.uint16_scaling)
        except ImageReadError as exc:
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
            failed.append({"file_name": str(path), "error": exc.reason})
            continue
        height, width = image.shape[:2]
        step = predictor.sr_scale if mode == "native" else 1
        num_tiles = len(scene_windows(width, height, tile // step, overlap // step))
        with tqdm(total=num_tiles, desc="  tiles", unit="tile", leave=False, disable=args.quiet) as tiles_bar:
            dets = predict_scene(
                predictor,
                image,
                mode=mode,
                tile_size=tile,
                overlap=overlap,
                score_thresh=args.score_thresh,
                merge=options,
                full_image=args.full_image,
                progress=tiles_bar.update,
            )
        image_id = gt_ids.get(str(path))
        if image_id is None:
            if gt:
                unmatched.append(str(path))
            image_id, next_id = next_id, next_id + 1
        results += detections_to_coco(dets.boxes, dets.scores, dets.labels, image_id, category_ids)
        images.append({"id": image_id, "file_name": str(path), "width": width, "height": height})
        totals["tiles"] += dets.stats["num_tiles"]
        totals["raw"] += dets.stats["num_raw"]
        totals["detections"] += len(dets)
        totals["megapixels"] += width * height / 1e6
        if not args.no_vis:
            picture = draw_detections(
                image,
                dets.boxes,
                dets.labels,
                dets.scores,
                predictor.class_names,
                score_thresh=args.vis_thresh,
                show_labels=not args.no_labels,
            )
            write_image(vis_dir / _vis_name(path, used_names), picture)
        bar.set_postfix(dets=len(dets))
    seconds = time.perf_counter() - t0
    categories = [{"id": c, "name": n} for c, n in zip(category_ids, predictor.class_names)]
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_json(out_dir / "images.json", {"images": images, "categories": categories}, indent=1)
    summary = {
        "config_file": args.config_file,
        "weights": args.weights,
        "mode": mode,
        "tile": tile,
        "overlap": overlap,
        "score_thresh": args.score_thresh,
        "merge": asdict(options),
        "images_done": len(images),
        "images_unreadable": len(failed),
        "unreadable": failed,
        "not_in_gt": unmatched,
        "tiles": totals["tiles"],
        "tile_detections": totals["raw"],
        "detections": totals["detections"],
        "seconds": round(seconds, 3),
        "seconds_per_megapixel": round(seconds / max(totals["megapixels"], 1e-9), 4),
    }
    print(
        f"\n| images done | unreadable | tiles | tile dets | scene dets | seconds | s/MPix |\n"
        f"|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {len(images)} | {len(failed)} | {totals['tiles']} | {totals['raw']} | {totals['detections']} | "
        f"{seconds:.1f} | {summary['seconds_per_megapixel']:.3f} |"
    )
    if unmatched:
        print(f"warning: {len(unmatched)} image(s) not found in {args.gt} (new ids given): {unmatched[:5]}")
    if gt and images:
        matched = [i["id"] for i in images if i["file_name"] not in unmatched]
        report = evaluate_scenes(gt, results, max_dets=args.eval_max_dets, image_ids=matched)
        atomic_write_json(out_dir / "scene_eval.json", report, indent=1)
        summary["scene_eval"] = report["metrics"]
        print("\n" + format_report(report))
    atomic_write_json(out_dir / "summary.json", summary, indent=1)
    print(
        f"\nwrote {out_dir / 'results.json'} ({len(results)} detections)"
        + ("" if args.no_vis else f" and {vis_dir}/")
    )
    return 0 if images else 1


def _json_or_none(path: str | None):
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else None


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return run(args)
    except (CheckpointMismatchError, DataError, FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
