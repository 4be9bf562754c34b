"""NWPU VHR-10 reader: ``positive_image_set/*.jpg`` + ``ground_truth/*.txt`` (+ optional negatives).

Ground-truth lines read ``(x1,y1),(x2,y2),class`` with class ids 1–10; spaces anywhere, trailing spaces,
CRLF endings and blank lines occur in the released files and are accepted. The corners are taken as
continuous coordinates (box width ``x2 - x1``): this reproduces the paper's Table I tile/object counts,
while ``x2 - x1 + 1`` does not (10,376 objects instead of 10,389).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import AnnotationParseError, UnknownClassError
from ..records import SourceDataset, SourceImage, SourceObject
from ._common import IssueLog, find_images

NWPU_VHR10_CLASSES = (
    "airplane",
    "ship",
    "storage tank",
    "baseball diamond",
    "tennis court",
    "basketball court",
    "ground track field",
    "harbor",
    "bridge",
    "vehicle",
)

_NUM = r"\s*([-+]?\d+(?:\.\d*)?)\s*"
_LINE = re.compile(rf"^\({_NUM},{_NUM}\)\s*,\s*\({_NUM},{_NUM}\)\s*,\s*(\d+)\s*$")


def parse_nwpu_ground_truth(path: str | Path, issues: IssueLog) -> list[SourceObject]:
    """Parse one ground-truth file.

    Raises:
        AnnotationParseError: a line does not parse (strict mode), naming file and line.
        UnknownClassError: a class id outside 1–10.
    """
    objects = []
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            issues.bad(
                "unparsed_lines",
                AnnotationParseError(str(path), number, "expected '(x1,y1),(x2,y2),class'", line),
            )
            continue
        x1, y1, x2, y2 = (float(v) for v in match.groups()[:4])
        class_id = int(match.group(5))
        if not 1 <= class_id <= len(NWPU_VHR10_CLASSES):
            known = [f"{i + 1}={n}" for i, n in enumerate(NWPU_VHR10_CLASSES)]
            raise UnknownClassError(str(class_id), known, f"{path}:{number}")
        objects.append(SourceObject(box=(x1, y1, x2, y2), category=class_id - 1))
    return objects


def read_nwpu_vhr10(root: str | Path, include_negative: bool = False, lenient: bool = False) -> SourceDataset:
    """Read NWPU VHR-10.

    Args:
        root: folder holding ``positive_image_set/``, ``ground_truth/`` and optionally
            ``negative_image_set/``.
        include_negative: also add the negative images (no objects; ids prefixed ``neg_``).
        lenient: skip (and count) unparseable lines and positive images without a ground-truth file
            instead of raising.

    Returns:
        :class:`SourceDataset` with ids = file stems (``"001"``), no official split.
    """
    root = Path(root)
    issues = IssueLog(lenient)
    positives = find_images(root / "positive_image_set")
    gt_dir = root / "ground_truth"
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"ground-truth folder {str(gt_dir)!r} does not exist")
    images = []
    for stem, path in positives.items():
        gt = gt_dir / f"{stem}.txt"
        if not gt.is_file():
            issues.bad(
                "missing_annotations", AnnotationParseError(str(gt), None, f"missing ground truth for {path}")
            )
            continue
        objects = parse_nwpu_ground_truth(gt, issues)
        images.append(SourceImage(stem, str(path), objects, rel_path=str(path.relative_to(root))))
    for gt in sorted(gt_dir.glob("*.txt")):
        if gt.stem not in positives:
            issues.note(
                "annotations_without_image", f"{gt}: no matching image in positive_image_set; ignored"
            )
    if include_negative:
        for stem, path in find_images(root / "negative_image_set").items():
            images.append(SourceImage(f"neg_{stem}", str(path), [], rel_path=str(path.relative_to(root))))
    images.sort(key=lambda im: im.image_id)
    return SourceDataset("nwpu_vhr10", NWPU_VHR10_CLASSES, images, None, issues.counts, issues.messages)
