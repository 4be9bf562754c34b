"""Run reports: Markdown tables, a JSON copy and PNG charts of an evaluation (framework-free).

Input is the report dict of :func:`sdconet.evaluation.coco_protocol.evaluate_coco` (plus optional SR metrics and an
error breakdown); :func:`write_run_report` writes

* ``<out>/report.md``: per dataset the headline table (every column names its maxDets), the size buckets with their
  GT counts, AP and AR per class x size bucket (GT counts in brackets), SR PSNR/SSIM beside bicubic, the error
  breakdown, and the notes (e.g. how the best checkpoint was chosen);
* ``<out>/report.json``: the same content as strict JSON (NaN -> null): ``{"run", "notes", "datasets": {name:
  {"coco", "sr", "errors", ...}}}``, ``coco`` being ``evaluate_coco``'s dict;
* ``<out>/report/<dataset>_per_class_ap.png`` (AP per class and size bucket) and
  ``<out>/report/<dataset>_pr_curves.png`` (precision-recall per class at IoU 0.5 and 0.75).

All files are written atomically; numbers are percent (PSNR in dB).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdconet.data.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "format_coco_tables",
    "format_errors_table",
    "format_sr_table",
    "plot_per_class_ap",
    "plot_pr_curves",
    "render_markdown",
    "set_report_note",
    "write_run_report",
]

#: Bucket label of the "all sizes" column.
ALL = "all"


def _f(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _frame_desc(rep: Mapping[str, Any]) -> str:
    scale = rep.get("frame_scale", 1.0)
    tail = f", 1 px = {scale:g} GT px" if scale != 1.0 else ""
    frame = rep.get("frame", "hr")
    unit = {"hr": "HR-frame px", "lr": "LR-frame px", "scene": "scene px"}.get(frame, f"{frame} px")
    return f"sqrt(area) in {unit}{tail}"


def _range(b: Mapping[str, Any]) -> str:
    lo, hi = b["range"]
    return f"≥ {lo:g}" if hi is None else (f"< {hi:g}" if lo == 0 else f"{lo:g}–{hi:g}")


def format_coco_tables(rep: Mapping[str, Any], *, note: str | None = None) -> str:
    """Markdown of one ``evaluate_coco`` report: headline (with maxDets), buckets with GT counts, per-class tables."""
    m, md = rep["metrics"], rep["metric_max_dets"]
    lines = [
        f"COCO box evaluation, protocol **{rep['protocol']}** (COCOeval maxDets {rep['max_dets']}), size buckets "
        f"**{rep['area_ranges']}** ({_frame_desc(rep)}): {rep['num_images']} images, {rep['num_gt']} GT objects, "
        f"{rep['num_dets']} detections.",
        "",
    ]
    if note:
        lines += [f"Note: {note}.", ""]
    ap_keys = [k for k in m if k.startswith("AP")]
    ar_keys = [k for k in m if k.startswith("AR")]
    for keys in (ap_keys, ar_keys):
        lines += [
            "| | " + " | ".join(keys) + " |",
            "|---|" + "---:|" * len(keys),
            "| value | " + " | ".join(_f(m[k]) for k in keys) + " |",
            "| maxDets | " + " | ".join(str(md[k]) for k in keys) + " |",
            "",
        ]
    per_m = rep["per_class_max_dets"]
    lines += [
        f"| size bucket | {_frame_desc(rep)} | GT | AP (maxDets {md.get('AP50')}) | AR (maxDets {per_m}) |",
        "|---|---|---:|---:|---:|",
    ]
    for b in rep["buckets"]:
        ap = m.get(f"AP{b['key']}")
        ar = m.get(f"AR{b['key']}")
        lines.append(f"| {b['name']} (AP{b['key']}) | {_range(b)} | {b['num_gt']} | {_f(ap)} | {_f(ar)} |")
    lines.append("")
    if rep.get("per_class"):
        keys = [ALL] + [b["key"] for b in rep["buckets"]]
        heads = ["all sizes"] + [b["name"] for b in rep["buckets"]]
        for what in ("AP", "AR"):
            extra = " (GT count in brackets)" if what == "AP" else ""
            lines += [
                f"{what} per class and size, maxDets {per_m}{extra}:",
                "",
                "| class | " + " | ".join(heads) + " |",
                "|---|" + "---:|" * len(heads),
            ]
            for row in rep["per_class"]:
                cells = []
                for k in keys:
                    v = _f(row[what][k])
                    cells.append(f"{v} ({row['num_gt'][k]})" if what == "AP" else v)
                lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def format_sr_table(sr: Mapping[str, float]) -> str:
    """Markdown table of SR vs bicubic PSNR/SSIM (keys ``PSNR``, ``SSIM``, ``bicubic_PSNR``, ``bicubic_SSIM``)."""
    lines = [
        f"Super-resolution on {int(sr.get('num_images', 0))} test images (RGB, 8-bit, vs the HR tile):",
        "",
        "| | PSNR (dB) | SSIM |",
        "|---|---:|---:|",
        f"| SR branch | {_f(sr.get('PSNR'), 2)} | {_f(sr.get('SSIM'), 4)} |",
    ]
    if "bicubic_PSNR" in sr:
        lines.append(f"| bicubic ×s | {_f(sr.get('bicubic_PSNR'), 2)} | {_f(sr.get('bicubic_SSIM'), 4)} |")
    return "\n".join(lines) + "\n"


def format_errors_table(errors: Mapping[str, Any]) -> str:
    """Markdown table of an error breakdown (``sdconet.evaluation.errors``: ``dAP`` and ``counts`` per type)."""
    types = list(errors["dAP"])
    special = dict(errors.get("special") or {})
    lines = [
        f"Error breakdown (TIDE's definitions at IoU {errors.get('pos_thresh', 0.5)}, background below IoU "
        f"{errors.get('bg_thresh', 0.1)}, up to {errors.get('max_dets', 100)} detections per image; TIDE's AP50 "
        f"{_f(errors.get('ap'))}). dAP50 = AP50 gained by fixing only that error type: Cls = right box, wrong "
        "class; Loc = right class, IoU 0.1-0.5; Both = wrong class and poor box; Dupe = a second detection of a "
        "found object; Bkg = detection on background; Miss = object never detected:",
        "",
        "| | " + " | ".join(types + list(special)) + " |",
        "|---|" + "---:|" * (len(types) + len(special)),
        "| dAP50 | " + " | ".join(_f(v, 2) for v in [errors["dAP"][t] for t in types] + list(special.values())) + " |",
        "| count | " + " | ".join(str(int(errors["counts"].get(t, 0))) for t in types) + " |" + " |" * len(special),
    ]
    return "\n".join(lines) + "\n"


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "dataset"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_per_class_ap(rep: Mapping[str, Any], path: str | Path, title: str = "") -> None:
    """Grouped bar chart: AP per class for all sizes and each size bucket (GT counts in the tick labels)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    rows = rep["per_class"]
    keys = [ALL] + [b["key"] for b in rep["buckets"]]
    names = ["all sizes"] + [b["name"] for b in rep["buckets"]]
    n, g = len(rows), len(keys)
    width = 0.8 / g
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * n * g / 2 + 2), 4.2))
    x = np.arange(n)
    for j, (k, label) in enumerate(zip(keys, names)):
        raw = [row["AP"][k] for row in rows]
        ok = [v is not None and math.isfinite(v) for v in raw]
        vals = [v if good else 0.0 for v, good in zip(raw, ok)]
        xs = x + (j - (g - 1) / 2) * width
        ax.bar(xs, vals, width, label=label)
        for xi, good in zip(xs, ok):
            if not good:  # no GT of this class in this bucket
                ax.text(xi, 1, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="0.4")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['name']}\n(n={r['num_gt'][ALL]})" for r in rows], fontsize=8)
    ax.set_ylabel(f"AP (%), maxDets {rep['per_class_max_dets']}")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=g, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.set_title(title or f"AP per class and size ({rep['area_ranges']} buckets, {rep['frame']} frame)")
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)


def plot_pr_curves(rep: Mapping[str, Any], path: str | Path, title: str = "") -> None:
    """Precision-recall curves per class (one panel each) at the report's IoUs (0.5, 0.75), all sizes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    pr = rep["pr_curves"]
    classes = list(pr["precision"])
    if not classes or not pr["recall"]:
        return
    cols = min(4, len(classes))
    rows_n = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.9 * rows_n), squeeze=False)
    recall = np.asarray(pr["recall"])
    ap_by_name = {r["name"]: r["AP"][ALL] for r in rep["per_class"]}
    for i, name in enumerate(classes):
        ax = axes[i // cols][i % cols]
        for iou, curve in zip(pr["iou"], pr["precision"][name]):
            ax.plot(recall, np.asarray(curve, dtype=float), label=f"IoU {iou:g}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name} (AP {_f(ap_by_name.get(name))})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("precision", fontsize=8)
        if i // cols == rows_n - 1:
            ax.set_xlabel("recall", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="lower left")
    for j in range(len(classes), rows_n * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(title or f"Precision-recall per class (all sizes, maxDets {pr['max_dets']})", fontsize=10)
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)


def render_markdown(data: Mapping[str, Any]) -> str:
    """The Markdown of a report dict (``{"title", "run", "notes", "datasets": {name: parts}}``, as in
    ``report.json``; image paths are relative to the report's folder)."""
    lines = [f"# {data.get('title') or 'Evaluation report'}", ""]
    run = data.get("run") or {}
    lines += [f"- {k}: {v}" for k, v in run.items()]
    if run:
        lines.append("")
    for name, parts in data.get("datasets", {}).items():
        lines += [f"## {name}", ""]
        if parts.get("coco") is not None:
            lines.append(format_coco_tables(parts["coco"], note=parts.get("note")))
        for img in parts.get("images", []):
            lines += [f"![{Path(img).stem}]({img})", ""]
        if parts.get("errors"):
            lines.append(format_errors_table(parts["errors"]))
        if parts.get("sr"):
            lines.append(format_sr_table(parts["sr"]))
        if parts.get("sr_images"):
            lines += ["SR samples (bicubic | SR | HR): " + ", ".join(f"[{Path(p).name}]({p})" for p in
                      parts["sr_images"]), ""]  # fmt: skip
    notes = data.get("notes") or {}
    notes = list(notes.values()) if isinstance(notes, Mapping) else list(notes)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _write(out: Path, data: Mapping[str, Any]) -> tuple[Path, Path]:
    md, js = out / "report.md", out / "report.json"
    data = _json_safe(data)
    atomic_write_json(js, data)
    atomic_write_text(md, render_markdown(data))
    return md, js


def write_run_report(
    output_dir: str | Path,
    datasets: Mapping[str, Mapping[str, Any]],
    *,
    run: Mapping[str, Any] | None = None,
    notes: Mapping[str, str] | None = None,
    title: str = "Evaluation report",
) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and the PNG charts of one evaluation into ``output_dir``.

    Args:
        output_dir: the run's output folder (``OUTPUT_DIR``).
        datasets: ``{dataset name: {"coco": evaluate_coco report or None, "note": maxDets note or None,
            "errors": error breakdown or None, "sr": SR metrics or None, "sr_images": [paths relative to
            output_dir]}}``.
        run: run facts shown first (e.g. ``{"iteration": 180, "weights": ...}``), any JSON values.
        notes: ``{key: sentence}`` listed under "Notes" (:func:`set_report_note` replaces one by key).
        title: the Markdown title.

    Returns:
        ``{"markdown": path, "json": path, "<dataset>_per_class_ap": path, "<dataset>_pr_curves": path, ...}``.
    """
    out = Path(output_dir)
    written: dict[str, Path] = {}
    parts_out: dict[str, dict[str, Any]] = {}
    for name, parts in datasets.items():
        parts = dict(parts)
        images = []
        coco = parts.get("coco")
        if coco is not None and coco.get("per_class"):
            slug = _slug(name)
            ap_png = out / "report" / f"{slug}_per_class_ap.png"
            pr_png = out / "report" / f"{slug}_pr_curves.png"
            plot_per_class_ap(coco, ap_png, title=f"{name}: AP per class and size")
            written[f"{name}_per_class_ap"] = ap_png
            images.append(ap_png.relative_to(out).as_posix())
            if coco["pr_curves"]["recall"]:
                plot_pr_curves(
                    coco, pr_png, title=f"{name}: precision-recall (maxDets {coco['per_class_max_dets']})"
                )
                written[f"{name}_pr_curves"] = pr_png
                images.append(pr_png.relative_to(out).as_posix())
        parts["images"] = images
        parts_out[name] = parts
    data = {"title": title, "run": dict(run or {}), "notes": dict(notes or {}), "datasets": parts_out}
    written["markdown"], written["json"] = _write(out, data)
    return written


def set_report_note(output_dir: str | Path, key: str, text: str | None) -> Path | None:
    """Set (or with ``text=None`` remove) the note ``key`` of the report in ``output_dir``, re-rendering
    ``report.md`` from ``report.json``; returns the Markdown path, or None when no report exists yet."""
    out = Path(output_dir)
    js = out / "report.json"
    if not js.is_file():
        return None
    data = json.loads(js.read_text(encoding="utf-8"))
    notes = dict(data.get("notes") or {})
    if text is None:
        notes.pop(key, None)
    else:
        notes[key] = text
    data["notes"] = notes
    return _write(out, data)[0]
