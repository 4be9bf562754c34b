"""One validation routine for every COCO json the project reads: dataset inputs, ground truths, results, image lists.

:func:`validate_coco` checks a parsed json and returns a :class:`CocoReport` of *errors* (the data would be read
wrongly: duplicate image / annotation / category ids, missing keys, boxes of the wrong length or not numbers,
annotations of unknown images or categories, non-finite scores) and *warnings* (harmless oddities, counted:
category ids that are 0-based or have gaps -- detectron2 and the dataset tools renumber them --, ``area`` missing or
inconsistent with the box, empty boxes, image files that do not exist). Every message names the file and the
offending id. :func:`load_coco_json` parses a file (bad JSON is named with its line and column), validates it and
raises :class:`CocoFormatError` on errors; :meth:`CocoReport.describe` lists what a reader would renumber or
recompute (``prepare_coco.py --dry-run`` prints it).

Kinds: ``"instances"`` (images + annotations + categories: inputs and ground truths), ``"results"`` (a list of
``{image_id, category_id, bbox, score}``), ``"images"`` (images + categories, e.g. ``tools/predict.py``'s
``images.json``), ``"categories"`` (only the categories are used, e.g. ``--dataset-json``).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError

__all__ = ["KINDS", "CocoFormatError", "CocoReport", "load_coco_json", "parse_json_file", "validate_coco"]

KINDS = ("instances", "results", "images", "categories")
#: Relative tolerance between ``area`` and ``w * h`` before a warning (boxes without segmentation).
AREA_RTOL = 0.01
#: Offending ids named per message before "... and N more".
MAX_SHOWN = 5


class CocoFormatError(DataError, ValueError):
    """A COCO json that would be read wrongly (the message names the file and the offending ids)."""


def _show(values: Sequence[Any]) -> str:
    values = list(values)
    head = ", ".join(repr(v) for v in values[:MAX_SHOWN])
    return head + (f", ... ({len(values)} in all)" if len(values) > MAX_SHOWN else "")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _as_id(v: Any) -> int | None:
    """An integer id (ints and integral floats / strings of digits); None when it is not one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return None


@dataclass
class CocoReport:
    """What :func:`validate_coco` found.

    Attributes:
        source: the file (or a name for in-memory data).
        kind: ``"instances"``, ``"results"`` or ``"images"``.
        errors: messages of problems that would make a reader go wrong.
        warnings: messages of harmless oddities.
        counts: warning kind -> number of occurrences (e.g. ``area_recomputed``), for summaries.
        category_map: original category id -> contiguous id 1..K (ascending id order) when the ids are not 1..K.
        unknown_category_ids: category ids used by annotations but absent from ``categories``.
        bad_annotations: list positions of the annotations with a problem (``lenient``: warnings, to be skipped).
    """

    source: str
    kind: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    category_map: dict[int, int] = field(default_factory=dict)
    unknown_category_ids: list[Any] = field(default_factory=list)
    bad_annotations: set[int] = field(default_factory=set)

    def error(self, message: str) -> None:
        self.errors.append(f"{self.source}: {message}")

    def warn(self, kind: str, count: int, message: str) -> None:
        self.counts[kind] += count
        self.warnings.append(f"{self.source}: {message}")

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_errors(self) -> CocoReport:
        """Raise :class:`CocoFormatError` listing every error; returns self when there is none."""
        if self.errors:
            more = (
                f" (and {len(self.errors) - 1} more problem(s): {'; '.join(self.errors[1:4])})"
                if len(self.errors) > 1
                else ""
            )
            raise CocoFormatError(self.errors[0] + more)
        return self

    def describe(self) -> str:
        """What a reader of this file renumbers or recomputes, and the other warnings (one line each)."""
        lines = list(self.warnings)
        if self.category_map:
            pairs = ", ".join(f"{a}->{b}" for a, b in sorted(self.category_map.items()))
            lines.append(f"{self.source}: category ids renumbered to 1..K in id order: {pairs}")
        return "\n".join(lines) if lines else f"{self.source}: nothing to renumber or recompute"


def _check_categories(report: CocoReport, categories: Any) -> set[int]:
    if not isinstance(categories, list):
        report.error("'categories' must be a list")
        return set()
    ids: list[int] = []
    missing, bad = [], []
    for index, cat in enumerate(categories):
        if not isinstance(cat, Mapping) or "id" not in cat or "name" not in cat:
            missing.append(index)
            continue
        cid = _as_id(cat["id"])
        if cid is None:
            bad.append(cat["id"])
            continue
        ids.append(cid)
    if missing:
        report.error(f"categories {_show(missing)} (list positions) lack 'id' or 'name'")
    if bad:
        report.error(f"category ids {_show(bad)} are not integers")
    dup = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dup:
        report.error(f"duplicate category ids {_show(dup)}")
    names = [str(c["name"]) for c in categories if isinstance(c, Mapping) and "name" in c]
    dup_names = sorted(k for k, n in Counter(names).items() if n > 1)
    if dup_names:
        report.error(f"duplicate category names {_show(dup_names)}")
    unique = sorted(set(ids))
    if unique and unique != list(range(1, len(unique) + 1)):
        how = "0-based" if unique[0] == 0 else "not contiguous 1..K"
        report.category_map = {cid: i + 1 for i, cid in enumerate(unique)}
        report.warn(
            "category_ids_renumbered",
            len(unique),
            f"category ids {_show(unique)} are {how}; detectron2 and the dataset tools renumber them 1..K in id order",
        )
    return set(ids)


def _check_images(report: CocoReport, images: Any, image_root: str | os.PathLike | None) -> set[int]:
    if not isinstance(images, list):
        report.error("'images' must be a list")
        return set()
    ids: list[int] = []
    names: list[str] = []
    missing_keys, bad_ids = [], []
    for index, img in enumerate(images):
        if not isinstance(img, Mapping) or "id" not in img or "file_name" not in img:
            missing_keys.append(img.get("id", f"#{index}") if isinstance(img, Mapping) else f"#{index}")
            continue
        iid = _as_id(img["id"])
        if iid is None:
            bad_ids.append(img["id"])
            continue
        ids.append(iid)
        names.append(str(img["file_name"]))
    if missing_keys:
        report.error(f"images {_show(missing_keys)} lack 'id' or 'file_name' (ids, or #list positions)")
    if bad_ids:
        report.error(f"image ids {_show(bad_ids)} are not integers")
    dup = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dup:
        report.error(f"duplicate image ids {_show(dup)} (two images would share one id and its boxes)")
    dup_names = sorted(k for k, n in Counter(names).items() if n > 1)
    if dup_names:
        report.error(f"duplicate image file_name {_show(dup_names)}")
    if image_root is not None:
        absent = [n for n in names if not (Path(image_root) / n).is_file()]
        if absent:
            report.warn(
                "image_files_missing",
                len(absent),
                f"{len(absent)} of {len(names)} image files do not exist under {str(image_root)!r}: {_show(absent)}",
            )
    return set(ids)


def _check_box(ann: Mapping[str, Any]) -> str | None:
    box = ann.get("bbox")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return f"bbox must be [x, y, w, h], got {box!r}"
    if not all(_is_number(v) for v in box):
        return f"bbox has non-numeric or non-finite values {box!r}"
    return None


def _check_annotations(
    report: CocoReport, annotations: Any, image_ids: set[int], category_ids: set[int], lenient: bool
) -> None:
    if not isinstance(annotations, list):
        report.error("'annotations' must be a list")
        return
    ids: list[int] = []
    missing_keys, bad_boxes, unknown_images, unknown_cats = [], [], [], []
    empty, no_area, wrong_area = [], [], []
    for index, ann in enumerate(annotations):
        if not isinstance(ann, Mapping):
            missing_keys.append(f"#{index}")
            report.bad_annotations.add(index)
            continue
        name = ann.get("id", f"#{index}")
        if not all(k in ann for k in ("id", "image_id", "category_id", "bbox")) or _as_id(ann["id"]) is None:
            missing_keys.append(name)
            report.bad_annotations.add(index)
            continue
        ids.append(_as_id(ann["id"]))
        problem = _check_box(ann)
        if problem:
            bad_boxes.append(f"{name}: {problem}")
            report.bad_annotations.add(index)
            continue
        if _as_id(ann["image_id"]) not in image_ids:
            unknown_images.append(name)
            report.bad_annotations.add(index)
        if _as_id(ann["category_id"]) not in category_ids:
            unknown_cats.append(name)
            report.unknown_category_ids.append(ann["category_id"])
        w, h = float(ann["bbox"][2]), float(ann["bbox"][3])
        if w <= 0 or h <= 0:
            empty.append(name)
        area = ann.get("area")
        if area is None:
            no_area.append(name)
        elif not _is_number(area):
            bad_boxes.append(f"{name}: area {area!r} is not a finite number")
            report.bad_annotations.add(index)
        elif not ann.get("segmentation") and abs(float(area) - w * h) > AREA_RTOL * max(w * h, 1.0):
            wrong_area.append(name)
    dup = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dup:
        report.error(f"duplicate annotation ids {_show(dup)} (pycocotools would mis-score them)")
    if unknown_cats:
        report.error(f"annotations {_show(unknown_cats)} refer to category ids that are not in 'categories'")
    per_annotation = []
    if missing_keys:
        per_annotation.append(
            (
                len(missing_keys),
                f"annotations {_show(missing_keys)} lack an integer 'id', 'image_id', 'category_id' or 'bbox'",
            )
        )
    if bad_boxes:
        per_annotation.append(
            (len(bad_boxes), f"annotations with a bad box: {'; '.join(bad_boxes[:MAX_SHOWN])}")
        )
    if unknown_images:
        per_annotation.append(
            (
                len(unknown_images),
                f"annotations {_show(unknown_images)} refer to image ids that are not in 'images'",
            )
        )
    for count, message in per_annotation:
        if lenient:
            report.warn("annotations_skipped", count, message + " (skipped: --lenient)")
        else:
            report.error(message)
    if empty:
        report.warn(
            "empty_boxes", len(empty), f"{len(empty)} annotations with zero width or height: {_show(empty)}"
        )
    if no_area:
        report.warn(
            "area_recomputed",
            len(no_area),
            f"{len(no_area)} annotations without 'area' (w*h is used): {_show(no_area)}",
        )
    if wrong_area:
        report.warn(
            "area_recomputed",
            len(wrong_area),
            f"{len(wrong_area)} annotations whose 'area' differs from the box's w*h (recomputed from the box): "
            f"{_show(wrong_area)}",
        )


def _check_results(
    report: CocoReport, results: Any, image_ids: set[int] | None, category_ids: set[int] | None
) -> None:
    if not isinstance(results, list):
        report.error("a COCO results file must be a list of {image_id, category_id, bbox, score}")
        return
    missing, bad_boxes, bad_scores, unknown_images, unknown_cats = [], [], [], set(), set()
    for index, r in enumerate(results):
        if not isinstance(r, Mapping) or not all(
            k in r for k in ("image_id", "category_id", "bbox", "score")
        ):
            missing.append(index)
            continue
        problem = _check_box(r)
        if problem:
            bad_boxes.append(f"#{index}: {problem}")
        if not _is_number(r["score"]):
            bad_scores.append(index)
        if image_ids is not None and _as_id(r["image_id"]) not in image_ids:
            unknown_images.add(r["image_id"])
        if category_ids is not None and _as_id(r["category_id"]) not in category_ids:
            unknown_cats.add(r["category_id"])
    if missing:
        report.error(f"results {_show(missing)} (list positions) lack image_id, category_id, bbox or score")
    if bad_boxes:
        report.error(f"results with a bad box: {'; '.join(bad_boxes[:MAX_SHOWN])}")
    if bad_scores:
        report.error(f"results {_show(bad_scores)} (list positions) have a non-numeric or non-finite score")
    if unknown_cats:
        report.error(
            f"results use category ids {_show(sorted(unknown_cats, key=str))} that the ground truth lacks"
        )
    if unknown_images:
        report.warn(
            "results_images_not_in_gt",
            len(unknown_images),
            f"results for image ids {_show(sorted(unknown_images, key=str))} that the ground truth lacks",
        )


def validate_coco(
    data: Any,
    kind: str = "instances",
    source: str = "<json>",
    image_root: str | os.PathLike | None = None,
    gt: Mapping[str, Any] | None = None,
    lenient: bool = False,
) -> CocoReport:
    """Check a parsed COCO json (module docstring).

    Args:
        data: the parsed json.
        kind: ``"instances"``, ``"results"`` or ``"images"``.
        source: the file name used in the messages.
        image_root: also check that every image's ``file_name`` exists under this folder (a warning).
        gt: for ``"results"``: the ground truth whose image and category ids the results must use.
        lenient: annotations with a bad box, missing keys or an unknown image are warnings (listed in
            :attr:`CocoReport.bad_annotations`, for the reader to skip) instead of errors.

    Returns:
        :class:`CocoReport` (call :meth:`~CocoReport.raise_errors` to stop on errors).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    report = CocoReport(str(source), kind)
    if kind == "results":
        image_ids = category_ids = None
        if gt is not None:
            image_ids = {_as_id(i.get("id")) for i in gt.get("images", []) if isinstance(i, Mapping)}
            category_ids = {_as_id(c.get("id")) for c in gt.get("categories", []) if isinstance(c, Mapping)}
        _check_results(report, data, image_ids, category_ids)
        return report
    if not isinstance(data, Mapping):
        report.error(
            f"a COCO {kind} json must be an object with 'images' and 'categories', got {type(data).__name__}"
        )
        return report
    required = {"instances": ("images", "annotations", "categories"), "images": ("images", "categories")}
    for key in required.get(kind, ("categories",)):
        if key not in data:
            report.error(f"missing the top-level key {key!r}")
    if report.errors:
        return report
    category_ids = _check_categories(report, data["categories"])
    if kind == "categories":
        if not data["categories"]:
            report.error("'categories' is empty")
        return report
    image_ids = _check_images(report, data["images"], image_root)
    if kind == "instances":
        _check_annotations(report, data["annotations"], image_ids, category_ids, lenient)
    return report


def parse_json_file(path: str | os.PathLike, where: str | None = None) -> Any:
    """Parse a JSON file.

    Raises:
        CocoFormatError: the file cannot be read, or is not valid JSON (``where``, default the path, is named with
            the line and column).
    """
    where = where or repr(str(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CocoFormatError(f"{where}: cannot be read: {reason}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CocoFormatError(f"{where}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from exc


def load_coco_json(
    path: str | os.PathLike,
    kind: str = "instances",
    option: str | None = None,
    image_root: str | os.PathLike | None = None,
    gt: Mapping[str, Any] | None = None,
    lenient: bool = False,
) -> tuple[Any, CocoReport]:
    """Read and validate a COCO json file.

    Args:
        path: the file.
        kind: see :func:`validate_coco`.
        option: the command-line option that named the file (e.g. ``"--gt"``), prefixed to messages.
        image_root, gt, lenient: see :func:`validate_coco`.

    Returns:
        ``(data, report)``; the report holds the warnings.

    Raises:
        CocoFormatError: unreadable file, bad JSON (line and column named) or validation errors.
    """
    where = f"{option} {str(path)!r}" if option else repr(str(path))
    data = parse_json_file(path, where)
    report = validate_coco(data, kind, where, image_root, gt, lenient)
    report.raise_errors()
    return data, report
