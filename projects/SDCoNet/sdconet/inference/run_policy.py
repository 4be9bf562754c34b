"""The reliability policy shared by the inference tools (``predict.py``, ``evaluate_scenes.py``, ``visualize.py``).

* **Exit codes** (:class:`ExitCode`): 0 every input done; 2 nothing started (a bad argument, config, checkpoint,
  ground truth or output location); 3 some inputs failed, the others' results are written; 4 no input could be
  done; 128 + signal number (130 for Ctrl-C / SIGINT, 143 for SIGTERM) interrupted, what was finished is written.
* **Output location first** (:func:`prepare_output_dir`, :func:`check_output_file`): a folder that is a file, cannot
  be created or written, or already holds the results of an earlier run is refused before any work (``--resume``
  continues the earlier run, ``--overwrite`` replaces it), so a run never fails at its end and never silently
  replaces earlier results.
* **Interruption** (:func:`interruptible`): SIGINT and SIGTERM raise :class:`Interrupted` in the main thread, so the
  tool can merge what is done before it exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterable, Iterator
from enum import IntEnum
from pathlib import Path

__all__ = [
    "ExitCode",
    "Interrupted",
    "OutputLocationError",
    "check_output_file",
    "exit_code_for",
    "interruptible",
    "prepare_output_dir",
]


class ExitCode(IntEnum):
    """Exit statuses of the inference tools (documented in docs/INFERENCE.md)."""

    OK = 0
    SETUP_ERROR = 2
    PARTIAL = 3
    NOTHING_DONE = 4
    INTERRUPTED = 128  # + the signal number


def exit_code_for(done: int, failed: int) -> int:
    """0 when nothing failed, :attr:`ExitCode.PARTIAL` when some inputs failed and some were done,
    :attr:`ExitCode.NOTHING_DONE` when none was done."""
    if done == 0:
        return int(ExitCode.NOTHING_DONE)
    return int(ExitCode.PARTIAL) if failed else int(ExitCode.OK)


class OutputLocationError(ValueError):
    """The output folder or file cannot be used (the message names it and says what to do)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (:attr:`signum`); :attr:`exit_code` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return int(ExitCode.INTERRUPTED) + self.signum


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _check_writable_dir(path: Path, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise OutputLocationError(f"{what} {str(path)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputLocationError(f"{what} {str(path)!r} cannot be written: {exc.strerror or exc}") from exc


def prepare_output_dir(
    path: str | os.PathLike,
    *,
    previous_outputs: Iterable[str],
    resume: bool = False,
    overwrite: bool = False,
    subdirs: Iterable[str] = (),
    option: str = "--output",
) -> tuple[Path, list[str]]:
    """Check (and create) an output folder before any work.

    Args:
        path: the folder.
        previous_outputs: names (files or folders, relative to ``path``; glob patterns allowed) that an earlier run
            leaves behind.
        resume: the caller continues an earlier run: its outputs are kept.
        overwrite: the caller replaces an earlier run: its outputs are deleted here.
        subdirs: sub-folders the run writes into (checked too).
        option: the argument's name, for messages.

    Returns:
        ``(folder, earlier outputs found)`` (relative names; empty when the folder held none).

    Raises:
        OutputLocationError: the folder is a file or not writable; earlier outputs exist and neither ``resume`` nor
            ``overwrite`` is given; or both are given.
    """
    if resume and overwrite:
        raise OutputLocationError("--resume and --overwrite exclude each other")
    folder = Path(path)
    _check_writable_dir(folder, option)
    found = sorted({str(p.relative_to(folder)) for pattern in previous_outputs for p in folder.glob(pattern)})
    if found and not (resume or overwrite):
        shown = ", ".join(found[:5]) + (f", ... ({len(found)} in all)" if len(found) > 5 else "")
        raise OutputLocationError(
            f"{option} {str(folder)!r} already holds the results of an earlier run ({shown}); pass --resume to "
            f"continue that run, --overwrite to replace it, or choose another {option}"
        )
    if overwrite:
        for name in found:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    for sub in subdirs:
        target = folder / sub
        if target.exists() and not target.is_dir():
            raise OutputLocationError(f"{option}: {str(target)!r} exists and is not a folder")
    return folder, found


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False, option: str = "--out") -> Path:
    """Check before any work that ``path`` can be written (its folder is created) and would not replace a file
    silently.

    Raises:
        OutputLocationError: ``path`` is a folder, its folder cannot be written, or it exists and ``overwrite`` is
            not given.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputLocationError(f"{option} {str(target)!r} is a folder, not a file")
    _check_writable_dir(target.parent if str(target.parent) else Path("."), f"the folder of {option}")
    if target.exists() and not overwrite:
        raise OutputLocationError(
            f"{option} {str(target)!r} exists; pass --overwrite to replace it or choose another file"
        )
    return target
