"""Atomic file writes: write a temporary file in the target folder, then ``os.replace`` it into place.

A reader (or a second process writing the same file) therefore never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating parent folders.

    Args:
        path: destination file.
        data: the complete file content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Serialise ``obj`` as JSON (deterministic key order as given) and write it atomically.

    Args:
        path: destination file.
        obj: a JSON-serialisable object.
        indent: ``None`` for compact output, else the indentation width.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    atomic_write_text(path, json.dumps(obj, indent=indent, separators=separators, ensure_ascii=False) + "\n")
