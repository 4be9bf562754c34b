#!/usr/bin/env python
"""Whole-scene (sliced) prediction with a trained SDCoNet: every object of large images, in scene coordinates.

Each image is cut into the dataset tiler's tiles (the training preset by default), every tile is predicted (in
``--mode hr`` after the same x1/s degradation as in training; in ``--mode native`` the image already is the
low-quality input and tiles are tile/s pixels), boxes are mapped back to the scene and merged across overlaps
(class-wise NMS by default; WBF with ``--merge wbf``; boxes cut by a tile border are dropped when another tile sees
the whole object). Tiles of all images flow through one batcher fed by a reader thread.

Outputs in ``--output``:

* ``results.json``: COCO results ``[{image_id, category_id, bbox: [x, y, w, h], score}]`` in scene pixels;
* ``images.json``: the images (``id``, ``file_name`` = input path, ``width``, ``height``) and ``categories``;
* ``vis/<name>.png``: the scene with boxes, class names and scores (``--no-vis`` to skip);
* ``summary.json``: settings and counts (images done / failed / resumed, tiles, detections, time, exit code);
* ``parts/rank0.jsonl``: one line per finished or failed scene, written as soon as the scene is done (the source of
  the files above, which are merged from it atomically at the end, also after Ctrl-C / SIGTERM);
* with ``--gt scenes.json``: image ids are the ground truth's (matched by file name) and ``scene_eval.json`` holds
  the scene-level COCO AP, also printed (see ``tools/evaluate_scenes.py``).

Reliability: the output folder is checked before any work; a folder holding an earlier run's results is refused
unless ``--resume`` (skip the images already done with the same settings, e.g. after a crash or a kill) or
``--overwrite`` (replace them) is given. An image that cannot be read or predicted is reported with its name, counted
in the summary, and the run goes on. Exit status: 0 all images done; 2 nothing started (bad argument, config,
checkpoint, ground truth or output folder); 3 some images failed (the others' results are written); 4 no image could
be done; 130 / 143 interrupted by SIGINT / SIGTERM (what was done is written; rerun with ``--resume``).

Example::

    python tools/predict.py --config-file output/quick_synthetic/config.yaml \\
        --weights output/quick_synthetic/model_final.pth --input scenes/ --output predictions/
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from sdconet.config_io import load_yaml_config
from sdconet.data.atomic import atomic_write_json
from sdconet.data.errors import DataError
from sdconet.data.image_io import write_image
from sdconet.data.scene_tiles import safe_stem
from sdconet.inference.checkpoint import CheckpointMismatchError
from sdconet.inference.cli import (
    add_merge_arguments,
    add_model_arguments,
    add_tiling_arguments,
    build_predictor,
    collect_inputs,
    load_json_file,
    merge_options,
    resolve_tiling,
)
from sdconet.inference.coco_results import category_ids_for, detections_to_coco, match_image_ids
from sdconet.inference.parts import PARTS_DIR, PartsWriter, done_scenes, input_key, read_parts, settings_hash
from sdconet.inference.run_policy import (
    ExitCode,
    Interrupted,
    OutputLocationError,
    exit_code_for,
    interruptible,
    prepare_output_dir,
)
from sdconet.inference.runner import SceneFailure, SceneRunner
from sdconet.inference.scene_eval import DEFAULT_MAX_DETS, evaluate_scenes, format_report
from sdconet.inference.sources import SceneInput
from sdconet.inference.tiling import TilingOptions
from sdconet.inference.visualize import draw_detections

logger = logging.getLogger("predict")

#: What a run leaves in its output folder (an earlier run is recognised by these).
RUN_OUTPUTS = (
    "results.json",
    "images.json",
    "summary.json",
    "scene_eval.json",
    "run.json",
    f"{PARTS_DIR}/rank*.jsonl",
    "vis/*.png",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, nargs="+", help="image file(s), folder(s) or glob(s)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--recursive", action="store_true", help="also read images in sub-folders of a folder input"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output: skip images already done with the same settings",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the results of an earlier run in --output"
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
    g.add_argument(
        "--prefetch", type=int, default=2, help="batches read ahead by the reader thread (2; 0 = none)"
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def vis_names(paths) -> dict[str, str]:
    """A unique PNG name per input, fixed by the input order (so a resumed run names pictures alike)."""
    used: set[str] = set()
    out = {}
    for path in paths:
        name = safe_stem(Path(path).stem)
        candidate, k = name, 1
        while candidate in used:
            k += 1
            candidate = f"{name}_{k}"
        used.add(candidate)
        out[str(path)] = candidate + ".png"
    return out


def _check_resume(out_dir: Path, settings: dict, digest: str) -> None:
    """Refuse ``--resume`` when the earlier run used other settings (the differing ones are named)."""
    run_file = out_dir / "run.json"
    if not run_file.is_file():
        return
    try:
        earlier = json.loads(run_file.read_text(encoding="utf-8"))
    except ValueError:
        return
    if earlier.get("settings_hash") == digest:
        return
    before = earlier.get("settings", {})
    changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
    raise OutputLocationError(
        f"--resume: the run in {str(out_dir)!r} used other settings ({', '.join(changed) or 'unknown'} differ); "
        "pass --overwrite to replace it or choose another --output"
    )


def run(args: argparse.Namespace) -> int:
    """Check everything (errors: exit 2, nothing written), then predict (:func:`predict_all`)."""
    try:
        setup = prepare(args)
    except (CheckpointMismatchError, DataError, FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return int(ExitCode.SETUP_ERROR)
    return predict_all(args, **setup)


def prepare(args: argparse.Namespace) -> dict:
    """Everything that can be checked before any work: output folder, inputs, ground truth, model, settings."""
    out_dir, earlier = prepare_output_dir(
        args.output,
        previous_outputs=RUN_OUTPUTS,
        resume=args.resume,
        overwrite=args.overwrite,
        subdirs=("vis", PARTS_DIR),
    )
    if args.overwrite and earlier:
        print(f"--overwrite: removed {len(earlier)} earlier output(s) from {out_dir}")
    inputs = collect_inputs(args.input, args.recursive)
    if not inputs:
        raise FileNotFoundError(f"--input {' '.join(args.input)}: no image files found")
    gt = load_json_file(args.gt, "--gt") if args.gt else None
    dataset_json = load_json_file(args.dataset_json, "--dataset-json") if args.dataset_json else None
    predictor = build_predictor(args, gt_json=args.gt)
    mode = args.mode or predictor.default_mode
    tile, overlap, tiling_source = resolve_tiling(args, predictor)
    options = merge_options(args)
    category_ids = category_ids_for(predictor.num_classes, gt if gt else dataset_json)
    settings = {
        "weights": input_key(args.weights),
        "config": settings_hash(load_yaml_config(args.config_file)),
        "mode": mode,
        "tile": tile,
        "overlap": overlap,
        "full_image": bool(args.full_image),
        "score_thresh": args.score_thresh,
        "merge": asdict(options),
        "precision": args.precision,
        "uint16_scaling": args.scaling,
        "sr_scale": predictor.sr_scale,
    }
    digest = settings_hash(settings)
    if args.resume:
        _check_resume(out_dir, settings, digest)
    keys = {str(p): input_key(p) for p in inputs}
    done_before = done_scenes(read_parts(out_dir), digest, list(keys.values())) if args.resume else {}
    print(
        f"{len(inputs)} input(s){f', {len(done_before)} already done (--resume)' if done_before else ''}; mode {mode}; "
        f"tile {tile or 'whole image'} / overlap {overlap} HR px ({tiling_source}); scale x{predictor.sr_scale}; "
        f"merge {options.method}/{options.match_metric}>{options.match_threshold}; "
        f"device {predictor.device} {predictor.precision}; classes: {', '.join(predictor.class_names)}"
    )
    return {
        "out_dir": out_dir,
        "inputs": inputs,
        "gt": gt,
        "predictor": predictor,
        "tiling": TilingOptions(mode=mode, tile_size=tile, overlap=overlap, full_image=args.full_image),
        "options": options,
        "category_ids": category_ids,
        "settings": settings,
        "digest": digest,
        "keys": keys,
        "done_before": done_before,
    }


def predict_all(
    args,
    *,
    out_dir,
    inputs,
    gt,
    predictor,
    tiling,
    options,
    category_ids,
    settings,
    digest,
    keys,
    done_before,
) -> int:
    """Predict the inputs not done yet, stream them to parts/, merge everything done into the final files."""
    atomic_write_json(out_dir / "run.json", {"settings_hash": digest, "settings": settings}, indent=1)
    todo = [p for p in inputs if str(p) not in done_before]
    names = vis_names(inputs)
    vis_dir = out_dir / "vis"
    mode, tile, overlap = tiling.mode, tiling.tile_size, tiling.overlap

    # The loop: every finished scene is appended to parts/rank0.jsonl at once.
    runner = SceneRunner(
        predictor,
        tiling,
        score_thresh=args.score_thresh,
        merge=options,
        prefetch=args.prefetch,
    )
    failures: list[dict] = []
    megapixels, interrupted, crashed = 0.0, None, None
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="scenes", unit="img", disable=args.quiet)
    tiles_bar = tqdm(desc="tiles", unit="tile", leave=False, disable=args.quiet)
    runner.on_tiles = lambda _scene, n: tiles_bar.update(n)
    scenes = (SceneInput.from_path(p, uint16_scaling=args.scaling) for p in todo)
    with PartsWriter(out_dir, digest) as parts, interruptible():
        try:
            with contextlib.closing(runner.run(scenes)) as events:
                for event in events:
                    key = keys[event.key]
                    if isinstance(event, SceneFailure):
                        tqdm.write(f"failed: {event.message}", file=sys.stderr)
                        failures.append({"file_name": event.key, "stage": event.stage, "error": event.reason})
                        parts.write_failure(key, event.stage, event.reason)
                        bar.update(1)
                        continue
                    dets = event.detections
                    if not args.no_vis:
                        try:
                            picture = draw_detections(
                                event.source.read((0, 0, dets.width, dets.height)),
                                dets.boxes,
                                dets.labels,
                                dets.scores,
                                predictor.class_names,
                                score_thresh=args.vis_thresh,
                                show_labels=not args.no_labels,
                            )
                            write_image(vis_dir / names[event.key], picture)
                        except (OSError, ValueError) as exc:
                            message = f"cannot write its picture: {exc}"
                            tqdm.write(f"failed: {event.key}: {message}", file=sys.stderr)
                            failures.append({"file_name": event.key, "stage": "write", "error": message})
                            parts.write_failure(key, "write", message)
                            bar.update(1)
                            continue
                    parts.write_scene(
                        key, dets.width, dets.height, dets.boxes, dets.scores, dets.labels, dets.stats
                    )
                    megapixels += dets.width * dets.height / 1e6
                    bar.update(1)
                    bar.set_postfix(dets=len(dets))
        except Interrupted as exc:
            interrupted = exc
            tqdm.write(f"{exc}: writing what is done", file=sys.stderr)
        except Exception as exc:  # a bug or a full disk: keep what is done, then fail loudly
            crashed = exc
            tqdm.write(f"unexpected error: {exc!r}; writing what is done, then stopping", file=sys.stderr)
    tiles_bar.close()
    bar.close()
    seconds = time.perf_counter() - t0

    # Merge every finished scene (this run's and, with --resume, the earlier ones) into the final files.
    done = done_scenes(read_parts(out_dir), digest, list(keys.values()))
    gt_ids = match_image_ids(gt, [str(p) for p in inputs]) if gt else {}
    next_id = max([int(i["id"]) for i in (gt or {}).get("images", [])] + [0]) + 1
    results, images, unmatched = [], [], []
    totals = {"tiles": 0, "raw": 0, "detections": 0}
    for path in inputs:
        line = done.get(str(path))
        if line is None:
            continue
        image_id = gt_ids.get(str(path))
        if image_id is None:
            if gt:
                unmatched.append(str(path))
            image_id, next_id = next_id, next_id + 1
        results += detections_to_coco(line["boxes"], line["scores"], line["labels"], image_id, category_ids)
        images.append(
            {"id": image_id, "file_name": str(path), "width": line["width"], "height": line["height"]}
        )
        totals["tiles"] += line["tiles"]
        totals["raw"] += line["tile_detections"]
        totals["detections"] += len(line["scores"])
    categories = [{"id": c, "name": n} for c, n in zip(category_ids, predictor.class_names)]
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_json(out_dir / "images.json", {"images": images, "categories": categories}, indent=1)
    code = interrupted.exit_code if interrupted else exit_code_for(len(images), len(failures))
    summary = {
        "config_file": args.config_file,
        "weights": args.weights,
        "settings_hash": digest,
        "mode": mode,
        "tile": tile,
        "overlap": overlap,
        "score_thresh": args.score_thresh,
        "merge": asdict(options),
        "full_image": bool(args.full_image),
        "inputs": len(inputs),
        "images_done": len(images),
        "images_resumed": len(done_before),
        "images_failed": len(failures),
        "images_unreadable": sum(1 for f in failures if f["stage"] == "open"),
        "images_not_started": len(inputs) - len(images) - len(failures),
        "failed": failures,
        "not_in_gt": unmatched,
        "tiles": totals["tiles"],
        "tile_detections": totals["raw"],
        "detections": totals["detections"],
        "seconds": round(seconds, 3),
        "seconds_per_megapixel": round(seconds / megapixels, 4) if megapixels else None,
        "interrupted": str(interrupted) if interrupted else (repr(crashed) if crashed else None),
        "exit_code": code,
    }
    print(
        f"\n| images done | resumed | failed | not started | tiles | tile dets | scene dets | seconds |\n"
        f"|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {len(images)} | {len(done_before)} | {len(failures)} | {summary['images_not_started']} | "
        f"{totals['tiles']} | {totals['raw']} | {totals['detections']} | {seconds:.1f} |"
    )
    for f in failures[:20]:
        print(f"failed: {f['file_name']} ({f['stage']}): {f['error']}")
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more failures (summary.json lists them all)")
    if unmatched:
        print(f"warning: {len(unmatched)} image(s) not found in {args.gt} (new ids given): {unmatched[:5]}")
    if gt and images and not (interrupted or crashed):
        matched = [i["id"] for i in images if i["file_name"] not in unmatched]
        try:
            report = evaluate_scenes(gt, results, max_dets=args.eval_max_dets, image_ids=matched)
        except ValueError as exc:  # the predictions are written; only the evaluation failed
            sys.stderr.write(f"error: scene evaluation against {args.gt!r} failed: {exc}\n")
            summary["scene_eval_error"] = str(exc)
            code = summary["exit_code"] = int(ExitCode.PARTIAL)
        else:
            atomic_write_json(out_dir / "scene_eval.json", report, indent=1)
            summary["scene_eval"] = report["metrics"]
            print("\n" + format_report(report))
    atomic_write_json(out_dir / "summary.json", summary, indent=1)
    print(
        f"\nwrote {out_dir / 'results.json'} ({len(results)} detections, {len(images)} images)"
        + ("" if args.no_vis else f" and {vis_dir}/")
    )
    if interrupted or crashed:
        print(
            f"stopped: {summary['images_not_started']} image(s) not done; rerun with --resume to finish them"
        )
    if crashed:
        raise crashed
    return code


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
