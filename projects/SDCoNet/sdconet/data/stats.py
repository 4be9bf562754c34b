"""Split statistics (Table I style): tiles, objects per class, and COCO size buckets in HR and LR pixels.

Size buckets use the COCO boundaries on ``area = w·h``: small ``< 32²``, medium ``32² ≤ area < 96²``,
large ``≥ 96²`` (COCOeval's own ranges are closed at both ends, so an area of exactly 32² or 96² counts
in two buckets there; here every object is in exactly one). The LR column uses ``area / scale²``, i.e.
the object's size in the ×``scale`` downsampled model input.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

COCO_BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, float("inf")))


def size_buckets(areas: Sequence[float], scale: int = 1) -> dict[str, int]:
    """Count areas (divided by ``scale²``) per COCO bucket."""
    counts = dict.fromkeys((name for name, _, _ in COCO_BUCKETS), 0)
    for area in areas:
        a = area / float(scale * scale)
        for name, lo, hi in COCO_BUCKETS:
            if lo <= a < hi:
                counts[name] += 1
                break
    return counts


def coco_split_stats(coco: dict[str, Any], lr_scale: int = 2) -> dict[str, Any]:
    """Statistics of one split's tile COCO dict.

    Returns:
        Dict with ``source_images``, ``images`` (tiles), ``empty_images``, ``padded_images``, ``objects``,
        ``truncated``, ``difficult``, ``per_class`` (name → count, class order), ``size_hr`` and
        ``size_lr_x<scale>`` (bucket → count).
    """
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns = coco["annotations"]
    with_objects = {a["image_id"] for a in anns}
    per_class = Counter(a["category_id"] for a in anns)
    areas = [a["area"] for a in anns]
    return {
        "source_images": len({im.get("source_image", im["id"]) for im in coco["images"]}),
        "images": len(coco["images"]),
        "empty_images": sum(1 for im in coco["images"] if im["id"] not in with_objects),
        "padded_images": sum(1 for im in coco["images"] if im.get("pad_w", 0) or im.get("pad_h", 0)),
        "objects": len(anns),
        "truncated": sum(a.get("truncated", 0) for a in anns),
        "difficult": sum(a.get("difficult", 0) for a in anns),
        "per_class": {names[k]: per_class.get(k, 0) for k in sorted(names)},
        "size_hr": size_buckets(areas, 1),
        f"size_lr_x{lr_scale}": size_buckets(areas, lr_scale),
    }


def total_stats(per_split: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sum the split statistics (numbers and nested counters) into a ``total`` entry."""
    total: dict[str, Any] = {}
    for stats in per_split.values():
        for key, value in stats.items():
            if isinstance(value, dict):
                slot = total.setdefault(key, {})
                for k, v in value.items():
                    slot[k] = slot.get(k, 0) + v
            else:
                total[key] = total.get(key, 0) + value
    return total


def stats_markdown(stats: dict[str, Any]) -> str:
    """Render the statistics dict written by the pipeline as markdown tables."""
    splits: dict[str, Any] = dict(stats["splits"])
    splits["total"] = stats["total"]
    cols = list(splits)
    lr_key = next((k for k in stats["total"] if k.startswith("size_lr_x")), None)
    lines = [f"# {stats.get('dataset', 'dataset')} split statistics", ""]
    settings = stats.get("settings", {})
    if settings:
        lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    lines += ["| split | categories | source images | images (tiles) | empty tiles | objects | truncated |"]
    lines += ["|---|---:|---:|---:|---:|---:|---:|"]
    n_cls = len(stats["total"].get("per_class", {}))
    for name in cols:
        s = splits[name]
        lines.append(
            f"| {name} | {n_cls} | {s['source_images']} | {s['images']} | {s['empty_images']} | "
            f"{s['objects']} | {s['truncated']} |"
        )
    lines += ["", "| class | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for cls in stats["total"].get("per_class", {}):
        lines.append(f"| {cls} | " + " | ".join(str(splits[c]["per_class"].get(cls, 0)) for c in cols) + " |")
    lines += ["", "| COCO size bucket | " + " | ".join(f"{c} HR" for c in cols)]
    if lr_key:
        scale = lr_key.rsplit("x", 1)[1]
        lines[-1] += " | " + " | ".join(f"{c} LR ×{scale}" for c in cols)
    lines[-1] += " |"
    n_cols = len(cols) * (2 if lr_key else 1)
    lines.append("|---|" + "---:|" * n_cols)
    for bucket, _, _ in COCO_BUCKETS:
        row = [str(splits[c]["size_hr"][bucket]) for c in cols]
        if lr_key:
            row += [str(splits[c][lr_key][bucket]) for c in cols]
        lines.append(f"| {bucket} | " + " | ".join(row) + " |")
    issues = {k: v for k, v in stats.get("issues", {}).items() if v}
    if issues:
        lines += ["", "Issues: " + ", ".join(f"{k}={v}" for k, v in sorted(issues.items()))]
    return "\n".join(lines) + "\n"
