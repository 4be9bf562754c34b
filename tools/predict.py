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
  the scene-level COCO AP, also printed (see ``tools/evaluate_scenes.py``);
* with ``--geo``: ``geo/<name>.geojson`` (RFC 7946, WGS84 longitude/latitude) and ``geo/<name>.gpkg`` (the raster's
  CRS) per georeferenced scene, one polygon per detection with class, score and pixel box;
* with ``--export-crops``: ``crops/<class>/<name>_<det>.png``, an image of every detection.

Rasters other than PNG/JPEG/BMP/WebP (GeoTIFF, COG, VRT, ...) are read window by window through rasterio when the
``geo`` extra is installed (memory does not grow with the raster; nodata tiles are skipped and counted), with one band
rule (``--bands``) and one 16-bit scaling (``--scaling``) shared with the dataset tools; ``--target-gsd`` resamples
georeferenced rasters to the ground sample distance the model was trained at. Boxes are always in the file's pixels.

Several processes (``--num-gpus N``, ``--num-machines M``, or ``torchrun``) share the scenes, or the tile rows of
one huge raster (``--shard``); rank 0 merges the raw tile detections of all of them into the same outputs one
process writes.

Reliability: the output folder is checked before any work; a folder holding an earlier run's results is refused
unless ``--resume`` (skip the images already done with the same settings, e.g. after a crash or a kill) or
``--overwrite`` (replace them) is given. An image that cannot be read or predicted is reported with its name, counted
in the summary, and the run goes on. Exit status: 0 all images done; 2 nothing started (bad argument, config,
checkpoint, ground truth or output folder); 3 some images failed (the others' results are written); 4 no image could
be done; 130 / 143 interrupted by SIGINT / SIGTERM (what was done is written; rerun with ``--resume``).

Example::

    python tools/predict.py --config-file output/quick_synthetic/config.yaml \\
        --weights output/quick_synthetic/model_final.pth --input scenes/ --output predictions/
    python tools/predict.py ... --input scene.tif --bands 3,2,1 --geo --output geo_predictions/
    torchrun --nproc_per_node 4 tools/predict.py ... --device cuda --input big.tif --output out/
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
from sdconet.data.bands import parse_bands
from sdconet.data.coco_check import load_coco_json
from sdconet.data.errors import DataError
from sdconet.data.image_io import write_image
from sdconet.data.scene_tiles import safe_stem
from sdconet.inference.accumulator import RawTileDetections, merge_raw
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
from sdconet.inference.crops import export_crops
from sdconet.inference.distributed import (
    SHARD_MODES,
    ToolEntry,
    barrier,
    broadcast_from_main,
    canonical_order,
    destroy_process_group,
    dist_info_from_env,
    gather_to_main,
    init_process_group,
    launch,
    raw_from_record,
    raw_to_record,
    shard_mode,
    shard_scenes,
    tile_row_shard,
)
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
from sdconet.inference.sources import PLAIN_IMAGE_EXTENSIONS, READERS, SceneInput, open_scene
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
    "geo/*.geojson",
    "geo/*.gpkg",
    "crops/*/*.png",
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
    g = p.add_argument_group("georeferenced rasters")
    g.add_argument(
        "--geo",
        action="store_true",
        help="write geo/<name>.geojson (WGS84, RFC 7946) and geo/<name>.gpkg (raster CRS) per scene; every "
        "input must be georeferenced",
    )
    g.add_argument(
        "--target-gsd",
        type=float,
        help="resample georeferenced rasters to this ground sample distance (metres/pixel) before tiling: the "
        "GSD of the images the model was trained on (in --mode hr: of the HR images, before degradation)",
    )
    g.add_argument(
        "--resampling",
        default="auto",
        choices=("auto", "nearest", "bilinear", "cubic", "average", "lanczos"),
        help="resampling for --target-gsd (auto: average when shrinking, bilinear when enlarging)",
    )
    g.add_argument(
        "--reader",
        choices=READERS,
        default="auto",
        help="auto: PNG/JPEG/BMP/WebP whole in memory, other rasters window by window (rasterio); or force one",
    )
    g.add_argument(
        "--mosaic",
        action="store_true",
        help="each folder in --input is one scene: its georeferenced tiles mosaicked by a VRT (<output>/mosaics/)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--score-thresh", type=float, default=0.05, help="drop detections below this score (0.05)")
    g.add_argument("--no-vis", action="store_true", help="do not write annotated PNGs")
    g.add_argument("--vis-thresh", type=float, default=0.3, help="draw boxes with at least this score (0.3)")
    g.add_argument("--no-labels", action="store_true", help="draw boxes without class names and scores")
    g.add_argument(
        "--vis-max-side",
        type=int,
        default=4096,
        help="pictures of larger scenes are shrunk to this long side (4096)",
    )
    g.add_argument(
        "--export-crops",
        action="store_true",
        help="write crops/<class>/<name>_<det>.png, an image of every detection above --crops-thresh",
    )
    g.add_argument("--crops-thresh", type=float, default=0.3, help="score of exported crops (0.3)")
    g.add_argument("--crop-pad", type=int, default=0, help="context pixels around exported crops (0)")
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
    g = p.add_argument_group("several processes / machines (or run under torchrun)")
    g.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes on this machine: one per GPU with --device cuda (cuda:<local rank>), any number on CPU",
    )
    g.add_argument("--num-machines", type=int, default=1, help="machines taking part (1)")
    g.add_argument(
        "--machine-rank", type=int, default=0, help="this machine's index (0 = the one that merges)"
    )
    g.add_argument(
        "--dist-url",
        default="auto",
        help="tcp://<machine 0 address>:<port> (auto: a free local port, one machine)",
    )
    g.add_argument(
        "--shard",
        choices=SHARD_MODES,
        default="auto",
        help="what the processes share: scenes, tile rows of every scene, or auto (scenes when there are at "
        "least as many as processes)",
    )
    g.add_argument(
        "--dist-timeout", type=float, default=24 * 60, help="minutes a process waits for the others (1440)"
    )
    args = p.parse_args(argv)
    args.bands = parse_bands(args.bands) if args.bands else None
    return args


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
    """Check everything (errors: exit 2, nothing written), then predict (:func:`predict_all`).

    In a multi-process run rank 0 checks the output folder and tells the others; every process then predicts its
    share and rank 0 merges and writes the outputs.
    """
    info = dist_info_from_env()
    init_process_group(info, args.dist_timeout)
    try:
        if info.distributed and str(args.device).startswith("cuda"):
            args.device = f"cuda:{info.local_rank}"
        error, setup = None, None
        if info.is_main:
            try:
                setup = prepare(args)
            except (CheckpointMismatchError, DataError, FileNotFoundError, ValueError) as exc:
                error = str(exc)
        if info.distributed:
            error = broadcast_from_main(error, info)
            shared = broadcast_from_main(
                None if setup is None else {k: setup[k] for k in ("inputs", "done_before")}, info
            )
            if error is None and not info.is_main:
                try:
                    setup = prepare(args, main=False)
                    setup.update(shared)
                except (CheckpointMismatchError, DataError, FileNotFoundError, ValueError) as exc:
                    sys.stderr.write(f"error (rank {info.rank}): {exc}\n")
                    setup = None
            ok = gather_to_main(setup is not None, info)
            ok = broadcast_from_main(all(ok) if ok is not None else True, info)
            if error is None and not ok:
                error = "a process could not start (see its error above)"
        if error is not None:
            if info.is_main:
                sys.stderr.write(f"error: {error}\n")
            return int(ExitCode.SETUP_ERROR)
        return predict_all(args, info=info, **setup)
    finally:
        destroy_process_group(info)


def _mosaic_inputs(args: argparse.Namespace, out_dir: Path) -> list[Path]:
    """``--mosaic``: one VRT per folder of georeferenced tiles (files stay inputs as they are)."""
    from sdconet.inference.geo.vrt import build_vrt

    inputs: list[Path] = []
    for spec in args.input:
        folder = Path(spec)
        if not folder.is_dir():
            inputs += collect_inputs([spec], args.recursive)
            continue
        pattern = "**/*" if args.recursive else "*"
        tiles = sorted(
            p
            for p in folder.glob(pattern)
            if p.is_file() and p.suffix.lower() in (".tif", ".tiff", ".jp2", ".img", ".vrt")
        )
        if not tiles:
            raise FileNotFoundError(f"--mosaic: no raster tiles in {spec!r}")
        inputs.append(build_vrt(tiles, out_dir / "mosaics" / f"{safe_stem(folder.resolve().name)}.vrt"))
    return inputs


def prepare(args: argparse.Namespace, main: bool = True) -> dict:
    """Everything that can be checked before any work: output folder, inputs, ground truth, model, settings.

    ``main=False`` (the other processes of a multi-process run): no output-folder checks and no printing; the inputs
    and the scenes done before come from rank 0.
    """
    if main:
        out_dir, earlier = prepare_output_dir(
            args.output,
            previous_outputs=RUN_OUTPUTS,
            resume=args.resume,
            overwrite=args.overwrite,
            subdirs=("vis", PARTS_DIR),
        )
        if args.overwrite and earlier:
            print(f"--overwrite: removed {len(earlier)} earlier output(s) from {out_dir}")
        inputs = _mosaic_inputs(args, out_dir) if args.mosaic else collect_inputs(args.input, args.recursive)
        if not inputs:
            raise FileNotFoundError(f"--input {' '.join(args.input)}: no image files found")
    else:
        out_dir, inputs = Path(args.output), []
    if args.geo or args.target_gsd is not None or args.reader == "raster":
        from sdconet.inference.geo.raster import rasterio_available

        if not rasterio_available():
            raise ValueError(
                "--geo / --target-gsd / --reader raster need rasterio and pyogrio: pip install 'sdconet[geo]'"
            )
    if args.geo or args.target_gsd is not None:
        plain = [str(p) for p in inputs if Path(p).suffix.lower() in PLAIN_IMAGE_EXTENSIONS]
        if plain:
            flag = "--geo" if args.geo else "--target-gsd"
            raise ValueError(
                f"{flag} needs georeferenced rasters (GeoTIFF, COG, VRT, ...); these inputs have no "
                f"georeferencing: {', '.join(plain[:5])}{' ...' if len(plain) > 5 else ''}"
            )
    if args.export_crops and args.crop_pad < 0:
        raise ValueError(f"--crop-pad must be >= 0, got {args.crop_pad}")
    gt, gt_report = load_coco_json(args.gt, "instances", "--gt") if args.gt else (None, None)
    if main and gt_report is not None and gt_report.warnings:
        print("\n".join(f"warning: {w}" for w in gt_report.warnings))
    dataset_json = (
        load_coco_json(args.dataset_json, "categories", "--dataset-json")[0] if args.dataset_json else None
    )
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
        "scaling": args.scaling,
        "bands": list(args.bands) if args.bands else None,
        "target_gsd": args.target_gsd,
        "resampling": args.resampling if args.target_gsd is not None else None,
        "reader": args.reader,
        "sr_scale": predictor.sr_scale,
    }
    digest = settings_hash(settings)
    done_before: dict = {}
    keys = {str(p): input_key(p) for p in inputs}
    if main:
        if args.resume:
            _check_resume(out_dir, settings, digest)
        done_before = done_scenes(read_parts(out_dir), digest, list(keys.values())) if args.resume else {}
        print(
            f"{len(inputs)} input(s){f', {len(done_before)} already done (--resume)' if done_before else ''}; mode "
            f"{mode}; tile {tile or 'whole image'} / overlap {overlap} HR px ({tiling_source}); scale "
            f"x{predictor.sr_scale}; merge {options.method}/{options.match_metric}>{options.match_threshold}; "
            f"device {predictor.device} {predictor.precision}; classes: {', '.join(predictor.class_names)}"
        )
        rasters = [p for p in inputs if Path(p).suffix.lower() not in PLAIN_IMAGE_EXTENSIONS]
        if rasters and args.mode is None and args.target_gsd is None:
            print(
                f"note: {len(rasters)} raster input(s) in --mode {mode} (the config's default). "
                + (
                    f"hr mode degrades every tile x1/{predictor.sr_scale} first, as the training HR images were: right "
                    "when the raster is as sharp as the training HR images; if it is already as coarse as the model's "
                    "LR input use --mode native. "
                    if mode == "hr"
                    else "native mode feeds the raster's pixels to the model as they are. "
                )
                + "--target-gsd resamples a georeferenced raster to the training GSD (docs/INFERENCE.md)."
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
        "done_before": done_before,
        "gt_warnings": dict(gt_report.counts) if gt_report is not None else {},
    }


def _open_options(args: argparse.Namespace) -> dict:
    return {
        "scaling": args.scaling,
        "bands": args.bands,
        "target_gsd": args.target_gsd,
        "resampling": args.resampling,
        "reader": args.reader,
        "require_georef": bool(args.geo),
    }


class SceneWriter:
    """What happens to a scene once its detections are merged (the same in one and in many processes): boxes to the
    file's pixels, the picture, the crops, the GIS files, and its line in ``parts/``."""

    def __init__(self, args, out_dir: Path, predictor, category_ids, names: dict[str, str]) -> None:
        self.args = args
        self.out_dir = out_dir
        self.class_names = predictor.class_names
        self.category_ids = category_ids
        self.names = names
        self.crops = 0
        self.geo_files = 0

    def write(self, parts: PartsWriter, key: dict, source, dets) -> None:
        """Write one scene; raises OSError/ValueError when an output cannot be written (nothing is recorded then)."""
        args = self.args
        path = key["path"]
        stem = Path(self.names[path]).stem
        to_px = getattr(source, "to_raster_pixels", None)
        boxes = to_px(dets.boxes) if to_px is not None else dets.boxes
        width = int(getattr(source, "raster_width", dets.width))
        height = int(getattr(source, "raster_height", dets.height))
        georef = getattr(source, "georef", None)
        extra = {"georef": georef.to_dict()} if georef is not None else {}
        if not args.no_vis:
            if max(dets.width, dets.height) > args.vis_max_side and hasattr(source, "read_thumbnail"):
                image, scale = source.read_thumbnail(args.vis_max_side)
            else:
                image, scale = source.read((0, 0, dets.width, dets.height)), 1.0
            picture = draw_detections(
                image,
                dets.boxes * scale,
                dets.labels,
                dets.scores,
                self.class_names,
                score_thresh=args.vis_thresh,
                show_labels=not args.no_labels,
            )
            write_image(self.out_dir / "vis" / self.names[path], picture)
        if args.export_crops:
            self.crops += export_crops(
                source,
                dets.boxes,
                dets.scores,
                dets.labels,
                self.class_names,
                self.out_dir / "crops",
                stem,
                min_score=args.crops_thresh,
                pad=args.crop_pad,
            )
        if args.geo:
            from sdconet.inference.geo.vector import detection_table, write_geojson, write_gpkg

            table = detection_table(
                path, boxes, dets.scores, dets.labels, self.class_names, self.category_ids
            )
            write_geojson(self.out_dir / "geo" / f"{stem}.geojson", georef, boxes, table)
            write_gpkg(self.out_dir / "geo" / f"{stem}.gpkg", georef, boxes, table)
            self.geo_files += 2
        parts.write_scene(key, width, height, boxes, dets.scores, dets.labels, dets.stats, extra=extra)


def predict_all(
    args,
    *,
    info,
    out_dir,
    inputs,
    gt,
    predictor,
    tiling,
    options,
    category_ids,
    settings,
    digest,
    done_before,
    gt_warnings,
) -> int:
    """Predict the inputs not done yet, stream them to parts/, merge everything done into the final files."""
    if info.is_main:
        atomic_write_json(out_dir / "run.json", {"settings_hash": digest, "settings": settings}, indent=1)
    keys = {str(p): input_key(p) for p in inputs}
    todo = [p for p in inputs if str(p) not in done_before]
    names = vis_names(inputs)
    writer = SceneWriter(args, out_dir, predictor, category_ids, names)
    quiet = args.quiet or not info.is_main
    failures: list[dict] = []
    stats = {"megapixels": 0.0, "tiles_done": 0, "tiles_skipped": 0}
    interrupted, crashed = None, None
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="scenes", unit="img", disable=quiet)
    tiles_bar = tqdm(desc="tiles", unit="tile", leave=False, disable=quiet)

    def fail(parts, path: str, stage: str, reason: str) -> None:
        tqdm.write(f"failed: {path}: {stage} failed: {reason}", file=sys.stderr)
        failures.append({"file_name": path, "stage": stage, "error": reason})
        parts.write_failure(keys[path], stage, reason)
        bar.update(1)

    def finish(parts, path: str, source, dets) -> None:
        try:
            writer.write(parts, keys[path], source, dets)
        except (OSError, ValueError) as exc:
            fail(parts, path, "write", f"cannot write its outputs: {exc}")
            return
        describe = getattr(source, "describe", None)
        if describe is not None and not quiet:
            tqdm.write(f"{path}: {describe()}")
        stats["megapixels"] += (
            int(getattr(source, "raster_width", dets.width))
            * int(getattr(source, "raster_height", dets.height))
            / 1e6
        )
        bar.update(1)
        bar.set_postfix(dets=len(dets))

    distributed_mode = None
    if info.distributed:
        distributed_mode = shard_mode(args.shard, len(todo), info)
    mine = shard_scenes(todo, info) if distributed_mode == "scenes" else todo
    runner = SceneRunner(
        predictor,
        tiling,
        score_thresh=args.score_thresh,
        merge=None if info.distributed else options,
        prefetch=args.prefetch,
        shard=tile_row_shard(info) if distributed_mode == "tiles" else None,
        # --compile: every forward pass gets one shape (edge tiles padded, the last batch filled with dummy tiles)
        fixed_shape=predictor.compile_mode is not None and tiling.tile_size > 0,
    )
    if predictor.compile_mode is not None and tiling.tile_size <= 0:
        logger.warning("--compile with --tile 0: every scene size compiles its own graph")

    def on_tiles(_scene: int, n: int) -> None:
        stats["tiles_done"] += n
        tiles_bar.update(n)

    runner.on_tiles = on_tiles
    open_options = _open_options(args)
    scenes = (SceneInput(str(p), lambda p=p: open_scene(p, **open_options)) for p in mine)
    records: list[dict] = []  # multi-process: this rank's raw detections per scene
    with PartsWriter(out_dir, digest, rank=info.rank) as parts, interruptible():
        try:
            with contextlib.closing(runner.run(scenes)) as events:
                for event in events:
                    if isinstance(event, SceneFailure):
                        fail(parts, event.key, event.stage, event.reason)
                        continue
                    stats["tiles_skipped"] += event.skipped
                    if not info.distributed:
                        finish(parts, event.key, event.source, event.detections)
                        continue
                    record = {
                        "width": event.plan.width,
                        "height": event.plan.height,
                        "tiles": len(event.plan.tiles),
                        "skipped": event.skipped,
                        **raw_to_record(canonical_order(event.raw)),
                    }
                    parts.write_raw(keys[event.key], record)
                    records.append({"input": event.key, **record})
                    bar.update(1)
        except Interrupted as exc:
            interrupted = exc
            tqdm.write(f"{exc}: writing what is done", file=sys.stderr)
        except Exception as exc:  # a bug or a full disk: keep what is done, then fail loudly
            crashed = exc
            tqdm.write(f"unexpected error: {exc!r}; writing what is done, then stopping", file=sys.stderr)
        if info.distributed:
            gathered = gather_to_main(
                (records, failures, dict(stats), repr(crashed) if crashed else None), info
            )
            if info.is_main:
                _merge_gathered(
                    gathered,
                    todo,
                    keys,
                    parts,
                    writer,
                    options,
                    failures,
                    stats,
                    open_options,
                    fail,
                    distributed_mode,
                )
    tiles_bar.close()
    bar.close()
    seconds = time.perf_counter() - t0
    if not info.is_main:
        barrier(info)
        if crashed:
            raise crashed
        return int(ExitCode.OK)
    code = _write_outputs(
        args,
        info=info,
        out_dir=out_dir,
        inputs=inputs,
        gt=gt,
        predictor=predictor,
        tiling=tiling,
        options=options,
        category_ids=category_ids,
        digest=digest,
        keys=keys,
        done_before=done_before,
        gt_warnings=gt_warnings,
        failures=failures,
        stats=stats,
        seconds=seconds,
        interrupted=interrupted,
        crashed=crashed,
        writer=writer,
        distributed_mode=distributed_mode,
    )
    barrier(info)
    return code


def _merge_gathered(
    gathered, todo, keys, parts, writer, options, failures, stats, open_options, fail, distributed_mode
) -> None:
    """Rank 0 of a multi-process run: merge every scene from the raw tile detections of all processes (each scene
    once all its pieces are in: one process's in ``scenes`` mode, every process's in ``tiles`` mode)."""
    by_input: dict[str, list[dict]] = {}
    failed = {f["file_name"] for f in failures}
    for rank, (records, rank_failures, rank_stats, rank_crash) in enumerate(gathered):
        if rank > 0:
            stats["tiles_done"] += rank_stats["tiles_done"]
            stats["tiles_skipped"] += rank_stats["tiles_skipped"]
            for f in rank_failures:
                if f["file_name"] not in failed:
                    failed.add(f["file_name"])
                    fail(parts, f["file_name"], f["stage"], f"(rank {rank}) {f['error']}")
            if rank_crash:
                tqdm.write(f"rank {rank} stopped early: {rank_crash}", file=sys.stderr)
        for record in records:
            by_input.setdefault(record["input"], []).append(record)
    expected = len(gathered) if distributed_mode == "tiles" else 1
    needs_source = not writer.args.no_vis or writer.args.export_crops or writer.args.geo
    needs_source = needs_source or open_options.get("target_gsd") is not None
    for path in map(str, todo):
        pieces = by_input.get(path, [])
        if path in failed or not pieces:
            continue
        if len(pieces) != expected:
            fail(parts, path, "gather", f"only {len(pieces)} of {expected} processes finished it")
            continue
        raw = canonical_order(RawTileDetections.concat([raw_from_record(r) for r in pieces]))
        width, height = pieces[0]["width"], pieces[0]["height"]
        try:
            dets = merge_raw(raw, width, height, options)
        except Exception as exc:  # noqa: BLE001
            fail(parts, path, "merge", str(exc))
            continue
        dets.stats = {
            "num_tiles": sum(r["tiles"] for r in pieces),
            "num_skipped": sum(r["skipped"] for r in pieces),
            **dets.stats,
            "seconds": 0.0,
        }
        try:
            source = open_scene(path, **open_options) if needs_source else _SizeOnly(width, height)
        except Exception as exc:  # noqa: BLE001
            fail(parts, path, "open", str(exc))
            continue
        try:
            writer.write(parts, keys[path], source, dets)
        except (OSError, ValueError) as exc:
            fail(parts, path, "write", f"cannot write its outputs: {exc}")
            continue
        finally:
            source.close()
        stats["megapixels"] += (
            int(getattr(source, "raster_width", width)) * int(getattr(source, "raster_height", height)) / 1e6
        )


class _SizeOnly:
    """A stand-in source when nothing but the scene size is needed."""

    georef = None

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height

    def close(self) -> None:
        pass


def _write_outputs(
    args,
    *,
    info,
    out_dir,
    inputs,
    gt,
    predictor,
    tiling,
    options,
    category_ids,
    digest,
    keys,
    done_before,
    gt_warnings,
    failures,
    stats,
    seconds,
    interrupted,
    crashed,
    writer,
    distributed_mode,
) -> int:
    """Merge every finished scene (this run's and, with --resume, the earlier ones) into the final files."""
    mode, tile, overlap = tiling.mode, tiling.tile_size, tiling.overlap
    vis_dir = out_dir / "vis"
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
        image = {"id": image_id, "file_name": str(path), "width": line["width"], "height": line["height"]}
        if line.get("georef"):
            image["georef"] = line["georef"]
        images.append(image)
        totals["tiles"] += line["tiles"]
        totals["raw"] += line["tile_detections"]
        totals["detections"] += len(line["scores"])
    categories = [{"id": c, "name": n} for c, n in zip(category_ids, predictor.class_names)]
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_json(out_dir / "images.json", {"images": images, "categories": categories}, indent=1)
    code = interrupted.exit_code if interrupted else exit_code_for(len(images), len(failures))
    tiles_per_s = stats["tiles_done"] / seconds if seconds > 0 else None
    mpix_per_s = stats["megapixels"] / seconds if seconds > 0 else None
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
        "scaling": args.scaling,
        "bands": list(args.bands) if args.bands else None,
        "target_gsd": args.target_gsd,
        "processes": info.world_size,
        "shard": distributed_mode,
        "batch_size": predictor.batch_size,
        "device": str(predictor.device),
        "compile": predictor.compile_mode,
        "compile_seconds": [round(c["seconds"], 2) for c in predictor.compile_log],
        "inputs": len(inputs),
        "images_done": len(images),
        "images_resumed": len(done_before),
        "images_failed": len(failures),
        "images_unreadable": sum(1 for f in failures if f["stage"] == "open"),
        "images_not_started": len(inputs) - len(images) - len(failures),
        "failed": failures,
        "not_in_gt": unmatched,
        "gt_warnings": gt_warnings,
        "tiles": totals["tiles"],
        "tiles_predicted": stats["tiles_done"],
        "tiles_skipped_nodata": stats["tiles_skipped"],
        "tile_detections": totals["raw"],
        "detections": totals["detections"],
        "geo_files": writer.geo_files,
        "crops": writer.crops,
        "seconds": round(seconds, 3),
        "tiles_per_second": round(tiles_per_s, 3) if tiles_per_s is not None else None,
        "megapixels_per_second": round(mpix_per_s, 4) if mpix_per_s is not None else None,
        "seconds_per_megapixel": round(seconds / stats["megapixels"], 4) if stats["megapixels"] else None,
        "interrupted": str(interrupted) if interrupted else (repr(crashed) if crashed else None),
        "exit_code": code,
    }
    print(
        f"\n| images done | resumed | failed | not started | tiles | nodata tiles | tile dets | scene dets | seconds "
        f"| tiles/s | MPix/s |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {len(images)} | {len(done_before)} | {len(failures)} | {summary['images_not_started']} | "
        f"{totals['tiles']} | {stats['tiles_skipped']} | {totals['raw']} | {totals['detections']} | {seconds:.1f} | "
        f"{(tiles_per_s or 0):.2f} | {(mpix_per_s or 0):.3f} |"
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
    extras = "" if args.no_vis else f" and {vis_dir}/"
    if args.geo:
        extras += f"; {writer.geo_files} GIS files in {out_dir / 'geo'}/"
    if args.export_crops:
        extras += f"; {writer.crops} crops in {out_dir / 'crops'}/"
    print(f"\nwrote {out_dir / 'results.json'} ({len(results)} detections, {len(images)} images){extras}")
    if interrupted or crashed:
        print(
            f"stopped: {summary['images_not_started']} image(s) not done; rerun with --resume to finish them"
        )
    if crashed:
        raise crashed
    return code


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if (args.num_gpus > 1 or args.num_machines > 1) and not dist_info_from_env().distributed:
        try:
            return launch(
                ToolEntry(__file__, "worker_main"),
                argv,
                args.num_gpus,
                args.num_machines,
                args.machine_rank,
                args.dist_url,
            )
        except ValueError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return int(ExitCode.SETUP_ERROR)
    return run(args)


def worker_main(argv: list[str]) -> int:
    """Entry point of a process started by ``--num-gpus`` / ``--num-machines`` (the environment names its rank)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
