"""Exception classes raised by the data tools (each names the offending file, line or argument)."""

from __future__ import annotations

from typing import Sequence


class DataError(Exception):
    """Base class of every error raised by :mod:`sdconet.data`."""


class ImageReadError(DataError):
    """An image file is missing, corrupt, truncated or of an unsupported kind.

    Attributes:
        path: the file that could not be read.
        reason: a short human-readable cause.
    """

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")


class AnnotationParseError(DataError):
    """An annotation file (or one line of it) does not parse.

    Attributes:
        path: the annotation file.
        line_number: 1-based line number, or ``None`` when the whole file is bad.
        line: the offending text (stripped), or ``None``.
    """

    def __init__(self, path: str, line_number: int | None, reason: str, line: str | None = None):
        self.path = str(path)
        self.line_number = line_number
        self.line = line
        where = self.path if line_number is None else f"{self.path}:{line_number}"
        shown = "" if line is None else f" (text: {line!r})"
        super().__init__(f"{where}: {reason}{shown}")


class UnknownClassError(DataError):
    """An annotation names a class that the dataset's class list does not contain.

    Attributes:
        name: the unknown class name or id, as written in the file.
        known: the dataset's class names.
    """

    def __init__(self, name: str, known: Sequence[str], where: str = ""):
        self.name = str(name)
        self.known = tuple(known)
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}unknown class {self.name!r}; known classes are: {', '.join(self.known)}")


class DatasetGuardError(DataError):
    """A dataset tool refuses to replace an existing dataset (or to write an empty one); nothing was changed."""
