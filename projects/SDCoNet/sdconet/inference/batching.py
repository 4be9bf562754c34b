"""Tiles of all scenes into model batches, and a reader thread that prepares them ahead of the model.

:func:`batch_tiles` groups the :class:`~sdconet.inference.tiling.TileTask` s of a stream (tiles of several scenes
share a batch) into :class:`TileBatch` es of ``batch_size``. With ``pad_to=(h, w)`` every input is padded (bottom /
right, with its padding mask, by the detector) to that size; ``fixed_shape=True`` also fills the last batch with
dummy tiles, so that every forward pass has the same shape ``(batch_size, 3, h, w)`` and a compiled model never
recompiles. Anything in the stream that is not a tile (the runner's scene events) is passed through at once, in order.

:func:`prefetch` runs a generator in a background thread with a bounded queue (reading, cropping and degrading the
next batches while the model runs on the current one); exceptions travel to the consumer, and stopping the consumer
stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .tiling import TileTask

__all__ = ["TileBatch", "batch_tiles", "prefetch"]

T = TypeVar("T")


@dataclass
class TileBatch:
    """One forward pass.

    Attributes:
        tasks: the real tiles (``images[:len(tasks)]`` are theirs).
        images: model inputs, (h, w, 3) uint8 each; ``len(images) - len(tasks)`` dummy tiles at the end.
        pad_to: ``(h, w)`` every input is padded to, or None (the detector pads to the largest input).
    """

    tasks: list[TileTask]
    images: list[np.ndarray]
    pad_to: tuple[int, int] | None = None

    @property
    def num_dummy(self) -> int:
        return len(self.images) - len(self.tasks)


def batch_tiles(
    stream: Iterable[Any],
    batch_size: int,
    pad_to: tuple[int, int] | None = None,
    fixed_shape: bool = False,
) -> Iterator[Any]:
    """Group the tiles of ``stream`` into batches; other items pass through immediately.

    Args:
        stream: :class:`~sdconet.inference.tiling.TileTask` s and other events, in order.
        batch_size: tiles per batch (>= 1).
        pad_to: pad every input to this ``(h, w)`` (at least its own size).
        fixed_shape: fill the last batch up to ``batch_size`` with dummy tiles (needs ``pad_to``).

    Yields:
        :class:`TileBatch` es and the stream's other items.

    Raises:
        ValueError: bad arguments, or (with ``fixed_shape``) a tile larger than ``pad_to``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if fixed_shape and pad_to is None:
        raise ValueError(
            "fixed_shape needs pad_to (the LR tile size); a whole-scene tile (tile 0) has no fixed shape"
        )
    pending: list[TileTask] = []

    def flush(final: bool) -> TileBatch:
        tasks = pending[:]
        pending.clear()
        images = [t.image for t in tasks]
        if fixed_shape and final and len(images) < batch_size:
            dummy = np.zeros((pad_to[0], pad_to[1], 3), np.uint8)
            images += [dummy] * (batch_size - len(images))
        return TileBatch(tasks, images, pad_to)

    for item in stream:
        if not isinstance(item, TileTask):
            yield item
            continue
        if fixed_shape and (item.image.shape[0] > pad_to[0] or item.image.shape[1] > pad_to[1]):
            raise ValueError(
                f"tile {item.tile_id} of scene {item.scene} is {item.image.shape[:2]}, larger than the fixed "
                f"batch shape {pad_to}"
            )
        pending.append(item)
        if len(pending) == batch_size:
            yield flush(final=False)
    if pending:
        yield flush(final=True)


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``iterable`` in a background thread, up to ``depth`` items ahead (``depth = 0``: no thread).

    The producer's exceptions are re-raised in the consumer. When the consumer stops early (break, exception,
    interruption), the thread is told to stop, the producer generator is closed in its own thread, and the thread is
    joined.
    """
    if depth <= 0:
        yield from iterable
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(iterable)
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Raised(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="sdconet-tile-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
