"""HRRSD reader: Pascal VOC layout (``OPT2017/{JPEGImages,Annotations,ImageSets/Main}``), 13 classes.

VOC boxes are 1-based inclusive pixel indices; like detectron2's VOC loader they become continuous
coordinates ``(xmin - 1, ymin - 1, xmax, ymax)``. The official division is used when
``ImageSets/Main`` exists: ``train`` = trainval (or train ∪ val), ``test`` = test.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import AnnotationParseError
from ..records import ClassBook, SourceDataset, SourceImage, SourceObject
from ._common import IssueLog, find_images

# Label order of the dataset's README (1 = ship ... 13 = parking lot); names as written in its xml files.
HRRSD_CLASSES = (
    "ship",
    "bridge",
    "ground track field",
    "storage tank",
    "basketball court",
    "tennis court",
    "airplane",
    "baseball diamond",
    "harbor",
    "vehicle",
    "crossroad",
    "T junction",
    "parking lot",
)


def parse_voc_xml(
    path: str | Path, book: ClassBook, issues: IssueLog
) -> tuple[list[SourceObject], int | None, int | None, str | None]:
    """Parse one VOC xml file.

    Returns:
        ``(objects, width, height, filename)``; width/height/filename are None when absent.

    Raises:
        AnnotationParseError: malformed xml or an object without a numeric ``bndbox`` (strict mode).
        UnknownClassError: a class name not in the dataset's list.
    """
    try:
        tree = ET.parse(str(path))
    except ET.ParseError as exc:
        issues.bad(
            "unparsed_files", AnnotationParseError(str(path), exc.position[0], f"malformed xml: {exc}")
        )
        return [], None, None, None
    node = tree.getroot()

    def _int(tag: str) -> int | None:
        text = node.findtext(tag)
        try:
            return int(float(text)) if text is not None else None
        except ValueError:
            return None

    objects = []
    for index, obj in enumerate(node.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"{path} (object {index})"
        try:
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            issues.bad(
                "unparsed_lines",
                AnnotationParseError(str(path), None, f"object {index} has no numeric bndbox"),
            )
            continue
        category = book.index(name, where=where)
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
        objects.append(SourceObject((xmin - 1.0, ymin - 1.0, xmax, ymax), category, difficult))
    return objects, _int("size/width"), _int("size/height"), node.findtext("filename")


def _read_list(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_hrrsd(root: str | Path, lenient: bool = False) -> SourceDataset:
    """Read HRRSD.

    Args:
        root: the ``OPT2017`` folder or its parent.
        lenient: skip (and count) malformed xml files / objects and xml files without an image.

    Returns:
        :class:`SourceDataset`; ``official_splits`` is ``{"train": ..., "test": ...}`` when
        ``ImageSets/Main`` has the lists, else None.
    """
    root = Path(root)
    if (root / "OPT2017").is_dir():
        root = root / "OPT2017"
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"annotation folder {str(ann_dir)!r} does not exist")
    book = ClassBook(HRRSD_CLASSES)
    issues = IssueLog(lenient)
    jpegs = find_images(root / "JPEGImages")
    images = []
    for xml in sorted(ann_dir.glob("*.xml")):
        objects, width, height, _ = parse_voc_xml(xml, book, issues)
        path = jpegs.get(xml.stem)
        if path is None:
            issues.bad(
                "missing_images", AnnotationParseError(str(xml), None, "no matching image in JPEGImages")
            )
            continue
        images.append(
            SourceImage(xml.stem, str(path), objects, width, height, rel_path=str(path.relative_to(root)))
        )
    official = None
    sets = root / "ImageSets" / "Main"
    if (sets / "test.txt").is_file():
        if (sets / "trainval.txt").is_file():
            train = _read_list(sets / "trainval.txt")
        else:
            train = [
                i
                for name in ("train.txt", "val.txt")
                if (sets / name).is_file()
                for i in _read_list(sets / name)
            ]
        known = {im.image_id for im in images}
        official = {}
        for split, ids in (("train", train), ("test", _read_list(sets / "test.txt"))):
            missing = [i for i in ids if i not in known]
            if missing:
                issues.note(
                    "listed_but_missing",
                    f"{sets}: {len(missing)} {split} ids without image/xml, e.g. {missing[0]!r}",
                )
            official[split] = [i for i in ids if i in known]
    images.sort(key=lambda im: im.image_id)
    return SourceDataset("hrrsd", HRRSD_CLASSES, images, official, issues.counts, issues.messages)
