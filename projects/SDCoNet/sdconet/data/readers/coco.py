"""Reader for any COCO-format json (bring-your-own data).

Category ids may be arbitrary; they are ordered by id and renumbered 1..K on output. ``iscrowd = 1``
annotations are skipped (counted); ``bbox`` is ``[x, y, w, h]`` in continuous pixel coordinates (``area`` is
recomputed from it). The json is checked first by :func:`sdconet.data.coco_check.validate_coco` (the one COCO
validation of the project); its warnings are counted in the statistics (``coco_*`` issues).
"""

from __future__ import annotations

from pathlib import Path

from ..coco_check import parse_json_file, validate_coco
from ..errors import AnnotationParseError, UnknownClassError
from ..records import SourceDataset, SourceImage, SourceObject
from ._common import IssueLog


def read_coco(
    json_path: str | Path, image_root: str | Path, name: str = "coco", lenient: bool = False
) -> SourceDataset:
    """Read a COCO json and its images.

    Args:
        json_path: instances json with ``images``, ``annotations`` and ``categories``.
        image_root: folder that the images' ``file_name`` are relative to.
        name: dataset name recorded in the statistics.
        lenient: skip (and count) malformed annotations and annotations of unknown images.

    Returns:
        :class:`SourceDataset` with ids = ``file_name`` without its extension, no official split.

    Raises:
        CocoFormatError: unreadable file, bad JSON, or what :func:`sdconet.data.coco_check.validate_coco` calls an
            error (duplicate or missing ids, missing keys, bad boxes; in lenient mode per-annotation problems are
            skipped and counted instead), naming the file and the offending ids.
        UnknownClassError: an annotation whose ``category_id`` is not among the categories.
    """
    json_path, image_root = Path(json_path), Path(image_root)
    issues = IssueLog(lenient)
    data = parse_json_file(json_path)
    report = validate_coco(data, "instances", str(json_path), image_root=image_root, lenient=lenient)
    if report.unknown_category_ids and isinstance(data, dict):
        known = [f"{c['id']}={c['name']}" for c in sorted(data["categories"], key=lambda c: int(c["id"]))]
        raise UnknownClassError(str(report.unknown_category_ids[0]), known, str(json_path))
    report.raise_errors()
    for kind, count in report.counts.items():
        if kind != "annotations_skipped":  # counted below as unparsed_lines
            issues.counts[f"coco_{kind}"] += count
    issues.messages.extend(report.warnings)
    categories = sorted(data["categories"], key=lambda c: int(c["id"]))
    raw_images = data["images"]
    class_names = tuple(str(c["name"]) for c in categories)
    cat_index = {int(c["id"]): i for i, c in enumerate(categories)}
    by_id: dict[int, SourceImage] = {}
    for entry in raw_images:
        file_name = str(entry["file_name"])
        image_id = str(Path(file_name).with_suffix("")).replace("\\", "/")
        by_id[int(entry["id"])] = SourceImage(
            image_id,
            str(image_root / file_name),
            [],
            entry.get("width"),
            entry.get("height"),
            rel_path=file_name,
        )
    for index, ann in enumerate(data.get("annotations", [])):
        where = f"{json_path} (annotations[{index}])"
        if ann.get("iscrowd", 0):
            issues.note("crowd_skipped", f"{where}: iscrowd annotation skipped")
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            image = by_id[int(ann["image_id"])]
            category_id = int(ann["category_id"])
        except KeyError as exc:
            issues.bad(
                "unparsed_lines",
                AnnotationParseError(str(json_path), None, f"annotations[{index}]: unknown or missing {exc}"),
            )
            continue
        except (TypeError, ValueError) as exc:
            issues.bad(
                "unparsed_lines",
                AnnotationParseError(str(json_path), None, f"annotations[{index}]: bad bbox ({exc})"),
            )
            continue
        if category_id not in cat_index:
            raise UnknownClassError(str(category_id), [f"{c['id']}={c['name']}" for c in categories], where)
        image.objects.append(SourceObject((x, y, x + w, y + h), cat_index[category_id]))
    images = sorted(by_id.values(), key=lambda im: im.image_id)
    ids = [im.image_id for im in images]
    if len(set(ids)) != len(ids):
        raise AnnotationParseError(str(json_path), None, "two images share a file_name (without extension)")
    return SourceDataset(name, class_names, images, None, issues.counts, issues.messages)
