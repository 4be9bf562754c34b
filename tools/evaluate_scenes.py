#!/usr/bin/env python
"""Score whole-scene predictions against the original (unsliced) ground truth with pycocotools.

``--results`` is a COCO results json (``tools/predict.py`` writes ``results.json``); its image ids are mapped to the
ground truth's through ``images.json`` next to it (file names matched by path suffix), so predictions made without
``--gt`` can be scored afterwards. The ground truth is a whole-scene COCO json, e.g. a split dataset's
``annotations/scenes_<split>.json`` (boxes in source-image pixels). Compare the numbers with the tile-level AP of
``train_net.py --eval-only`` to see what tiling costs or gains.

AP is reported for every ``--max-dets`` (default 100 = COCO standard, and 1000 for dense scenes), overall and per
class, then under ``--protocol`` (``coco`` or the paper's ``mmdet``: AP at maxDets 100, the rest at 1000) with the
``--area-ranges`` size buckets (``coco`` or ``aitod``, in scene pixels) and their GT counts -- the same code as the
detectron2 evaluator (``sdconet.evaluation.coco_protocol``, see docs/EVALUATION.md). Only the scenes that were
predicted are scored unless ``--all-images`` is given.

Same reliability policy as ``tools/predict.py``: ``--out`` is checked before any work and an existing file is
replaced only with ``--overwrite``; unreadable or invalid files are named. Exit status: 0 every predicted image was
scored; 2 nothing started (bad argument, unreadable ground truth / results, ``--out`` unusable); 3 some predicted
images are not in the ground truth (named; the others are scored); 4 none of them is.

Example::

    python tools/evaluate_scenes.py --gt datasets/nwpu_vhr10_split/annotations/scenes_test.json \\
        --results predictions/results.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdconet.data.atomic import atomic_write_json
from sdconet.data.coco_check import load_coco_json
from sdconet.evaluation.coco_protocol import AREA_PRESETS, PROTOCOLS
from sdconet.inference.coco_results import match_image_ids
from sdconet.inference.run_policy import ExitCode, check_output_file, exit_code_for
from sdconet.inference.scene_eval import DEFAULT_MAX_DETS, evaluate_scenes, format_report


def remap_results(gt: dict, results: list, images: dict | None) -> tuple[list, list[int], list[str]]:
    """Results with image ids translated to the ground truth's; the GT ids covered; input files not in the GT."""
    if images is None:  # the results' ids are the ground truth's
        known = {int(img["id"]) for img in gt.get("images", [])}
        ids = sorted({int(r["image_id"]) for r in results})
        kept = [r for r in results if int(r["image_id"]) in known]
        return kept, [i for i in ids if i in known], [f"image_id {i}" for i in ids if i not in known]
    files = [str(img["file_name"]) for img in images.get("images", [])]
    found = match_image_ids(gt, files)
    mapping = {
        int(img["id"]): found[str(img["file_name"])]
        for img in images["images"]
        if str(img["file_name"]) in found
    }
    missing = [f for f in files if f not in found]
    remapped = [
        dict(r, image_id=mapping[int(r["image_id"])]) for r in results if int(r["image_id"]) in mapping
    ]
    return remapped, sorted(set(mapping.values())), missing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="whole-scene COCO ground truth json")
    p.add_argument("--results", required=True, help="COCO results json (tools/predict.py results.json)")
    p.add_argument("--images", help="images.json of the predictions (default: next to --results, if present)")
    p.add_argument(
        "--max-dets", type=int, nargs="+", default=list(DEFAULT_MAX_DETS), help="maxDets (100 1000)"
    )
    p.add_argument(
        "--ignore-difficult", action="store_true", help="objects flagged difficult neither count nor hurt"
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default="coco", help="headline protocol (coco)")
    p.add_argument("--area-ranges", choices=sorted(AREA_PRESETS), default="coco", help="size buckets (coco)")
    p.add_argument(
        "--all-images", action="store_true", help="score every GT scene (unpredicted ones as misses)"
    )
    p.add_argument("--out", help="write the report as json here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = p.parse_args(argv)
    try:
        if args.out:
            check_output_file(args.out, overwrite=args.overwrite)
        gt, gt_report = load_coco_json(args.gt, "instances", "--gt")
        for warning in gt_report.warnings:
            print(f"warning: {warning}")
        results = load_coco_json(args.results, "results", "--results")[0]
        images_path = Path(args.images) if args.images else Path(args.results).with_name("images.json")
        images = load_coco_json(images_path, "images", "--images")[0] if images_path.is_file() else None
        results, ids, missing = remap_results(gt, results, images)
        predicted = len(ids) + len(missing)
        for name in missing[:20]:
            print(f"failed: {name}: not in the ground truth {args.gt!r}", file=sys.stderr)
        if args.all_images:
            ids = [int(img["id"]) for img in gt.get("images", [])]
        report = evaluate_scenes(
            gt,
            results,
            args.max_dets,
            args.ignore_difficult,
            image_ids=ids,
            protocol=args.protocol,
            area_ranges=args.area_ranges,
        )
    except (ValueError, KeyError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return int(ExitCode.SETUP_ERROR)
    report["images_not_in_gt"] = missing
    report["gt_warnings"] = dict(gt_report.counts)
    print(format_report(report))
    if missing:
        print(
            f"{len(missing)} of {predicted} predicted image(s) are not in the ground truth and were not scored"
        )
    if args.out:
        atomic_write_json(args.out, report, indent=1)
    return exit_code_for(predicted - len(missing), len(missing)) if predicted else int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
