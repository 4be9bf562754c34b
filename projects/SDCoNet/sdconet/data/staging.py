"""Replace a split dataset's metadata files together or not at all: staged, then swapped in under a journal.

The metadata of a split dataset (``annotations/*.json``, ``<split>_sources.txt``, ``stats.json``, ``stats.md``; see
:mod:`sdconet.data.layout`) is written into ``<root>/.staging/`` first. :meth:`StagedFiles.commit` then writes a
journal (``.staging/COMMIT.json``: the files to move in and the earlier run's metadata files this run does not
produce, which are deleted), fsyncs it, and applies it with ``os.replace``. A crash before the journal exists leaves
the old metadata untouched (the staging folder is discarded by the next run); a crash after it is rolled forward by
the next run (:func:`recover_staged`). So a typo, a crash or a kill never leaves a mixed or empty dataset. Tiles are
not staged: they are written in place (``--skip-existing`` relies on them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

__all__ = ["METADATA_PATTERNS", "STAGE_DIR", "StagedFiles", "recover_staged"]

logger = logging.getLogger(__name__)

STAGE_DIR = ".staging"
JOURNAL = "COMMIT.json"
#: The metadata files of a split dataset (relative glob patterns): replaced together.
METADATA_PATTERNS = (
    "annotations/instances_*.json",
    "annotations/scenes_*.json",
    "*_sources.txt",
    "stats.json",
    "stats.md",
)


def _move(src: Path, dst: Path) -> None:
    """One step of the swap (``os.replace``: atomic per file)."""
    os.replace(src, dst)


def _fsync_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _apply(root: Path) -> None:
    """Carry out the journal of ``root/.staging`` (idempotent: a rerun after a crash finishes it)."""
    stage = root / STAGE_DIR
    journal = json.loads((stage / JOURNAL).read_text(encoding="utf-8"))
    for rel in journal["replace"]:
        src, dst = stage / rel, root / rel
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            _move(src, dst)
    for rel in journal["delete"]:
        (root / rel).unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)


def recover_staged(root: str | os.PathLike) -> str | None:
    """Finish or discard a swap that a crash interrupted.

    Returns:
        ``"rolled forward"`` (a committed swap was finished), ``"discarded"`` (an uncommitted staging folder was
        removed; the dataset is the earlier run's) or None (nothing to do).
    """
    root = Path(root)
    stage = root / STAGE_DIR
    if not stage.exists():
        return None
    if (stage / JOURNAL).is_file():
        _apply(root)
        logger.warning("%s: finished replacing the metadata files of an interrupted run", root)
        return "rolled forward"
    shutil.rmtree(stage, ignore_errors=True)
    logger.warning("%s: discarded the staged files of an interrupted run (the dataset is unchanged)", root)
    return "discarded"


class StagedFiles:
    """Stage files under ``root/.staging`` and swap them in together (module docstring).

    Args:
        root: the dataset folder.
        managed: glob patterns (relative to ``root``) of the files a run owns; existing ones the run does not stage
            are deleted by the commit.
    """

    def __init__(self, root: str | os.PathLike, managed: Iterable[str] = METADATA_PATTERNS) -> None:
        self.root = Path(root)
        self.stage = self.root / STAGE_DIR
        self.managed = tuple(managed)
        recover_staged(self.root)
        self.stage.mkdir(parents=True, exist_ok=True)

    def path(self, final: str | os.PathLike) -> str:
        """Where to write the file that will end up at ``final`` (a path under ``root``)."""
        rel = Path(os.path.relpath(final, self.root))
        if rel.parts and rel.parts[0] == "..":
            raise ValueError(f"{final} is not inside {self.root}")
        target = self.stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return str(target)

    def staged(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.stage)).replace(os.sep, "/")
            for p in self.stage.rglob("*")
            if p.is_file() and p.name != JOURNAL
        )

    def commit(self) -> list[str]:
        """Swap the staged files in; returns the earlier files that were deleted (not produced by this run)."""
        staged = self.staged()
        keep = set(staged)
        stale = sorted(
            {
                str(p.relative_to(self.root)).replace(os.sep, "/")
                for pattern in self.managed
                for p in self.root.glob(pattern)
                if p.is_file()
            }
            - keep
        )
        _fsync_write(self.stage / JOURNAL, json.dumps({"replace": staged, "delete": stale}, indent=1))
        _apply(self.root)
        for rel in stale:
            logger.warning("%s: removed %s of an earlier run (not produced by this run)", self.root, rel)
        return stale

    def abort(self) -> None:
        """Discard the staged files (the dataset stays as it was)."""
        shutil.rmtree(self.stage, ignore_errors=True)
