"""Helpers shared by the dataset readers: image discovery and the strict/lenient issue log."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ..errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def find_images(folder: str | Path) -> dict[str, Path]:
    """Map file stem → path for the images directly inside ``folder`` (sorted, case-insensitive ext).

    When two files share a stem (``a.jpg`` and ``a.png``) the first in sorted order wins.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            found.setdefault(path.stem, path)
    return found


class IssueLog:
    """Collects recoverable problems; in strict mode the "bad input" ones are raised instead.

    Args:
        lenient: when False, :meth:`bad` raises the error it is given.
    """

    def __init__(self, lenient: bool = False):
        self.lenient = lenient
        self.counts: Counter = Counter()
        self.messages: list[str] = []

    def bad(self, kind: str, error: DataError) -> None:
        """Report unparseable input: raise it (strict) or count and log it (lenient)."""
        if not self.lenient:
            raise error
        self.note(kind, str(error))

    def note(self, kind: str, message: str) -> None:
        """Count and log a problem that never stops the run (e.g. an image without annotations)."""
        self.counts[kind] += 1
        self.messages.append(message)
        logger.warning("%s", message)
