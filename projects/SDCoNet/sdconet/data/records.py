"""Reader-independent records of a source dataset (scenes before tiling).

Coordinates are continuous pixel coordinates of the source image: pixel ``i`` spans ``[i, i+1)``, a box is
``(x1, y1, x2, y2)`` with area ``(x2-x1)·(y2-y1)``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from .errors import UnknownClassError


@dataclass(frozen=True)
class SourceObject:
    """One annotated object of a source image.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in source-image pixels.
        category: 0-based index into the dataset's ``class_names``.
        difficult: the dataset's own "difficult" flag (DOTA, VOC), else False.
    """

    box: tuple[float, float, float, float]
    category: int
    difficult: bool = False


@dataclass
class SourceImage:
    """One source image (scene) with its objects.

    Attributes:
        image_id: stable id, unique in the dataset (usually the file stem); used to name tiles and splits.
        path: absolute or working-directory-relative image path.
        objects: annotated objects.
        width: width in pixels if known from the annotation (the pipeline reads the real size).
        height: height in pixels if known.
        rel_path: path relative to the dataset root, stored in the tiles' ``source_file``.
    """

    image_id: str
    path: str
    objects: list[SourceObject] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    rel_path: str = ""


@dataclass
class SourceDataset:
    """A parsed dataset.

    Attributes:
        name: short dataset name (``"nwpu_vhr10"``, ``"dota15"``, ...).
        class_names: class names; category ``k`` of a :class:`SourceObject` is ``class_names[k]``.
        images: source images, sorted by ``image_id``.
        official_splits: ``split name -> image ids`` when the data ships its own split, else None.
        issues: counters of recoverable problems found while reading (skipped lines, missing files, ...).
        messages: one human-readable line per recoverable problem (file and line named).
    """

    name: str
    class_names: tuple[str, ...]
    images: list[SourceImage]
    official_splits: dict[str, list[str]] | None = None
    issues: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)


def normalize_class_name(name: str) -> str:
    """Canonical form used to match class names: lower case, ``-``/``_``/spaces folded to one space."""
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


class ClassBook:
    """Maps class names (tolerant to case, ``-``, ``_`` and spaces) to 0-based indices.

    Args:
        class_names: the dataset's class names in category order.
        aliases: optional extra spellings ``{alias: canonical name}``.
    """

    def __init__(self, class_names: Sequence[str], aliases: dict[str, str] | None = None):
        self.class_names = tuple(class_names)
        self._index = {normalize_class_name(n): i for i, n in enumerate(self.class_names)}
        if len(self._index) != len(self.class_names):
            raise ValueError(f"class names are not unique after normalisation: {self.class_names}")
        for alias, canonical in (aliases or {}).items():
            self._index[normalize_class_name(alias)] = self._index[normalize_class_name(canonical)]

    def index(self, name: str, where: str = "") -> int:
        """Return the 0-based index of ``name``.

        Raises:
            UnknownClassError: listing the known class names (``where`` names the file/line).
        """
        try:
            return self._index[normalize_class_name(name)]
        except KeyError:
            raise UnknownClassError(name, self.class_names, where) from None
