"""Streamed results of a prediction run: one JSON-lines file per process, merged atomically into the final files.

Every finished (or failed) scene appends one line to ``<output>/parts/rank<r>.jsonl`` (flushed and fsynced, so a
killed run loses at most the scene in progress)::

    {"v": 1, "type": "scene", "input": "scenes/a.png", "input_key": {"path": ..., "size": ..., "mtime_ns": ...},
     "settings": "<settings hash>", "width": W, "height": H, "tiles": T, "tile_detections": R, "seconds": t,
     "boxes": [[x1, y1, x2, y2], ...], "scores": [...], "labels": [...]}
    {"v": 1, "type": "failure", "input": ..., "input_key": ..., "settings": ..., "stage": "open", "error": "..."}

Multi-process runs (:mod:`sdconet.inference.distributed`) also write ``"type": "raw"`` lines: a process's raw tile
detections of its share of a scene (lossless, before merging); rank 0 merges them into the ``scene`` line.

A scene is *done* for ``--resume`` when a ``scene`` line exists with the same input key (path as given, size and
modification time of the file) and the same settings hash (:func:`settings_hash` of everything that changes the
detections: weights, config, mode, tiling, merging, thresholds, ...). :func:`read_parts` reads every rank's file
(a line torn by a kill is ignored); :func:`done_scenes` picks the latest line of each input. The merge into COCO
``results.json`` / ``images.json`` is done by the tool from these lines (so a resumed run and an uninterrupted one
write the same files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PARTS_DIR",
    "PartsWriter",
    "done_scenes",
    "input_key",
    "read_parts",
    "settings_hash",
]

logger = logging.getLogger(__name__)

PARTS_DIR = "parts"
FORMAT_VERSION = 1
#: Decimals kept in the parts lines (the final COCO results keep fewer).
BOX_DECIMALS = 3
SCORE_DECIMALS = 5


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Short stable hash (16 hex digits) of a JSON-serialisable settings mapping (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def input_key(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"}`` of an input file (size and time -1 when it cannot be stat'ed)."""
    try:
        st = os.stat(path)
        return {"path": str(path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    except OSError:
        return {"path": str(path), "size": -1, "mtime_ns": -1}


def _key_tuple(key: Mapping[str, Any]) -> tuple:
    return (str(key.get("path")), int(key.get("size", -1)), int(key.get("mtime_ns", -1)))


class PartsWriter:
    """Appends lines to ``<output>/parts/rank<rank>.jsonl``.

    Opening repairs a line torn by a kill (the file is cut back to its last complete line).

    Args:
        output: the run's output folder.
        rank: this process's rank (one file per process).
        settings: the settings hash written into every line.
    """

    def __init__(self, output: str | os.PathLike, settings: str, rank: int = 0) -> None:
        self.path = Path(output) / PARTS_DIR / f"rank{int(rank)}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self._repair()
        self._file = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            logger.warning(
                "%s: dropping a torn last line (%d bytes) left by an interrupted run",
                self.path,
                len(data) - cut,
            )
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def write_scene(
        self,
        key: Mapping[str, Any],
        width: int,
        height: int,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        stats: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """One finished scene (boxes ``x1, y1, x2, y2`` in scene pixels, class indices); ``extra`` keys (e.g. the
        georeferencing) are stored in the line too."""
        self._write(
            {
                **(extra or {}),
                "v": FORMAT_VERSION,
                "type": "scene",
                "input": key["path"],
                "input_key": dict(key),
                "settings": self.settings,
                "width": int(width),
                "height": int(height),
                "tiles": int(stats.get("num_tiles", 0)),
                "tile_detections": int(stats.get("num_raw", 0)),
                "seconds": round(float(stats.get("seconds", 0.0)), 4),
                "boxes": np.round(np.asarray(boxes, np.float64).reshape(-1, 4), BOX_DECIMALS).tolist(),
                "scores": np.round(np.asarray(scores, np.float64), SCORE_DECIMALS).tolist(),
                "labels": np.asarray(labels, np.int64).tolist(),
            }
        )

    def write_raw(self, key: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        """The raw tile detections of this process's share of a scene (multi-process runs; not a finished scene)."""
        self._write(
            {
                "v": FORMAT_VERSION,
                "type": "raw",
                "input": key["path"],
                "input_key": dict(key),
                "settings": self.settings,
                **record,
            }
        )

    def write_failure(self, key: Mapping[str, Any], stage: str, error: str) -> None:
        """One failed scene."""
        self._write(
            {
                "v": FORMAT_VERSION,
                "type": "failure",
                "input": key["path"],
                "input_key": dict(key),
                "settings": self.settings,
                "stage": stage,
                "error": error,
            }
        )

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> PartsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_parts(output: str | os.PathLike) -> list[dict[str, Any]]:
    """Every line of every ``parts/rank*.jsonl`` of ``output`` (rank files in rank order, lines in file order).

    A line that does not parse (torn by a kill) is skipped with a warning naming the file and line.
    """
    lines: list[dict[str, Any]] = []
    folder = Path(output) / PARTS_DIR
    files = sorted(folder.glob("rank*.jsonl"), key=lambda p: (len(p.name), p.name))
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except ValueError:
                    logger.warning(
                        "%s:%d: ignoring a line that does not parse (torn by a kill?)", path, number
                    )
                    continue
                if isinstance(record, dict) and record.get("v") == FORMAT_VERSION:
                    lines.append(record)
    return lines


def done_scenes(
    lines: Sequence[Mapping[str, Any]], settings: str, keys: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Mapping[str, Any]]:
    """The latest ``scene`` line of every input done with ``settings``.

    Args:
        lines: :func:`read_parts` output.
        settings: the current settings hash.
        keys: the current inputs' :func:`input_key` s; a line counts only when its key matches (same path, size and
            modification time). None = every line.

    Returns:
        ``{input path: line}``.
    """
    wanted = None if keys is None else {_key_tuple(k) for k in keys}
    out: dict[str, Mapping[str, Any]] = {}
    for line in lines:
        if line.get("type") != "scene" or line.get("settings") != settings:
            continue
        key = _key_tuple(line.get("input_key", {}))
        if wanted is not None and key not in wanted:
            continue
        out[key[0]] = line
    return out
