"""DOTA v1.0 / v1.5 ``labelTxt`` reader (horizontal boxes).

Layout (DOTA_devkit's): ``<root>/<split>/images/P0000.png`` and ``<root>/<split>/labelTxt/P0000.txt``
for each official split (``train``, ``val``). A label file may start with ``imagesource:...`` and
``gsd:...`` header lines; every object line is ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]``. The
horizontal box is the polygon's bounding box; ``difficult`` (default 0) is carried over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import AnnotationParseError
from ..records import ClassBook, SourceDataset, SourceImage, SourceObject
from ._common import IssueLog, find_images

DOTA10_CLASSES = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)
DOTA15_CLASSES = DOTA10_CLASSES + ("container-crane",)
DOTA_CLASSES = {"1.0": DOTA10_CLASSES, "1.5": DOTA15_CLASSES}
_NUM_POLY = 8


def _leading_numbers(tokens: Sequence[str]) -> int:
    """How many tokens at the start of a line are numbers (finite or not)."""
    count = 0
    for token in tokens:
        try:
            float(token)
        except ValueError:
            break
        count += 1
    return count


def parse_dota_label_file(path: str | Path, book: ClassBook, issues: IssueLog) -> list[SourceObject]:
    """Parse one DOTA label file into horizontal-box objects.

    Raises:
        AnnotationParseError: a line that is neither a header nor ``8 numbers + class [+ difficult]``
            (strict mode), naming file and line.
        UnknownClassError: a class name not in the version's class list.
    """
    objects = []
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) == 1 and ":" in line:  # "imagesource:GoogleEarth", "gsd:0.146"
            continue
        numbers = _leading_numbers(tokens)
        if numbers != _NUM_POLY or len(tokens) not in (_NUM_POLY + 1, _NUM_POLY + 2):
            if numbers != _NUM_POLY:
                reason = f"expected 8 coordinates before the class name, found {numbers}"
            else:
                reason = f"expected 'class [difficult]' after the 8 coordinates, found {len(tokens) - _NUM_POLY} fields"
            issues.bad("unparsed_lines", AnnotationParseError(str(path), number, reason, line))
            continue
        coords = [float(t) for t in tokens[:_NUM_POLY]]
        try:
            difficult = int(tokens[_NUM_POLY + 1]) != 0 if len(tokens) == _NUM_POLY + 2 else False
        except ValueError:
            issues.bad(
                "unparsed_lines",
                AnnotationParseError(
                    str(path), number, f"difficult must be 0 or 1, got {tokens[-1]!r}", line
                ),
            )
            continue
        category = book.index(tokens[_NUM_POLY], where=f"{path}:{number}")
        xs, ys = coords[0::2], coords[1::2]
        objects.append(SourceObject((min(xs), min(ys), max(xs), max(ys)), category, difficult))
    return objects


def read_dota(
    root: str | Path,
    version: str = "1.5",
    splits: Sequence[str] = ("train", "val"),
    image_dir: str = "images",
    label_dir: str = "labelTxt",
    lenient: bool = False,
) -> SourceDataset:
    """Read DOTA with its official splits.

    Args:
        root: folder holding one sub-folder per split.
        version: ``"1.0"`` (15 classes) or ``"1.5"`` (16, adds container-crane).
        splits: split folders to read; those that do not exist are skipped with a warning.
        image_dir: image folder name inside each split.
        label_dir: label folder name inside each split (e.g. ``labelTxt-v1.5``).
        lenient: skip (and count) bad lines and images without a label file instead of raising.

    Returns:
        :class:`SourceDataset` whose ``official_splits`` maps each split found to its image ids.
    """
    if version not in DOTA_CLASSES:
        raise ValueError(f"version must be one of {sorted(DOTA_CLASSES)}, got {version!r}")
    root = Path(root)
    classes = DOTA_CLASSES[version]
    book = ClassBook(classes)
    issues = IssueLog(lenient)
    images: list[SourceImage] = []
    official: dict[str, list[str]] = {}
    for split in splits:
        split_root = root / split
        if not split_root.is_dir():
            issues.note("missing_splits", f"{split_root}: split folder not found; skipped")
            continue
        labels = split_root / label_dir
        if not labels.is_dir():
            raise FileNotFoundError(f"label folder {str(labels)!r} does not exist (see --label-dir)")
        ids = []
        found = find_images(split_root / image_dir)
        for stem, path in found.items():
            label = labels / f"{stem}.txt"
            if not label.is_file():
                issues.bad(
                    "missing_annotations",
                    AnnotationParseError(str(label), None, f"missing label file for {path}"),
                )
                continue
            objects = parse_dota_label_file(label, book, issues)
            images.append(SourceImage(stem, str(path), objects, rel_path=str(path.relative_to(root))))
            ids.append(stem)
        for label in sorted(labels.glob("*.txt")):
            if label.stem not in found:
                issues.note("annotations_without_image", f"{label}: no matching image; ignored")
        official[split] = ids
    seen: set[str] = set()
    for im in images:
        if im.image_id in seen:
            raise ValueError(f"image id {im.image_id!r} occurs in more than one DOTA split under {root}")
        seen.add(im.image_id)
    images.sort(key=lambda im: im.image_id)
    return SourceDataset(
        f"dota{version.replace('.', '')}", classes, images, official, issues.counts, issues.messages
    )
