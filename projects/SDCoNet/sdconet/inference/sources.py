"""Scene sources: one input scene of the whole-scene prediction loop, read window by window.

A *scene source* (:class:`SceneSource`) has a ``key`` (the input as given, e.g. its path), a ``width`` and
``height`` in scene pixels, ``read(window) -> (h, w, 3) uint8 RGB`` for a window ``(x0, y0, x1, y1)`` (half-open,
scene pixels, inside the scene), ``close()``, and ``georef`` (None for plain images; a georeferenced source gives
what is needed to map scene pixels to map coordinates).

* :class:`ImageSource` reads a file with :func:`sdconet.data.image_io.read_image_rgb` (the dataset tools' reader:
  grayscale, RGBA, palette, 16-bit and float rasters become 8-bit RGB) and keeps the whole image in memory.
* :class:`ArraySource` wraps an image already in memory (the Python API, :func:`~sdconet.inference.scene.predict_scene`).

:func:`open_scene` is the one place that decides which source reads a path; other readers (e.g. a windowed
GeoTIFF reader) plug in there. :class:`SceneInput` is a not-yet-opened scene: the runner opens it lazily, in its
reader thread, so that a file that cannot be read fails that scene only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..data.image_io import read_image_rgb
from ..data.tiler import Window

__all__ = ["ArraySource", "ImageSource", "SceneInput", "SceneSource", "check_window", "open_scene"]


@runtime_checkable
class SceneSource(Protocol):
    """One input scene (see the module docstring)."""

    key: str
    width: int
    height: int
    georef: Any

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window = (x0, y0, x1, y1)`` (scene pixels, half-open) as (y1-y0, x1-x0, 3) uint8 RGB."""
        ...

    def close(self) -> None: ...


def check_window(window: Window, width: int, height: int, key: str) -> tuple[int, int, int, int]:
    """``window`` as ints, after checking that it is a non-empty window inside a ``width x height`` scene.

    Raises:
        ValueError: an empty window or one outside the scene (the message names the scene).
    """
    x0, y0, x1, y1 = (int(v) for v in window)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"{key}: window {window} is empty or outside the {width}x{height} scene")
    return x0, y0, x1, y1


class ArraySource:
    """A scene already in memory.

    Args:
        image: (H, W, 3) uint8 RGB.
        key: a name for messages and results (default ``"<array>"``).
    """

    georef = None

    def __init__(self, image: np.ndarray, key: str = "<array>") -> None:
        if (
            not isinstance(image, np.ndarray)
            or image.ndim != 3
            or image.shape[2] != 3
            or image.dtype != np.uint8
        ):
            desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"{key}: the image must be an (H, W, 3) uint8 RGB array, got {desc}")
        self.key = str(key)
        self.image = image
        self.height, self.width = int(image.shape[0]), int(image.shape[1])

    def read(self, window: Window) -> np.ndarray:
        x0, y0, x1, y1 = check_window(window, self.width, self.height, self.key)
        return self.image[y0:y1, x0:x1]

    def close(self) -> None:
        self.image = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r}, {self.width}x{self.height})"


class ImageSource(ArraySource):
    """An image file read whole into memory (:func:`~sdconet.data.image_io.read_image_rgb`).

    Args:
        path: the image file.
        uint16_scaling: ``"full"`` or ``"percentile"`` (16-bit / float rasters to 8 bits).

    Raises:
        ImageReadError: the file is missing, corrupt or of an unsupported kind (the message names it).
    """

    def __init__(self, path: str | os.PathLike, uint16_scaling: str = "full") -> None:
        super().__init__(read_image_rgb(path, uint16_scaling=uint16_scaling), key=str(path))
        self.path = Path(path)


def open_scene(path: str | os.PathLike, *, uint16_scaling: str = "full", **options: Any) -> SceneSource:
    """The source that reads ``path`` (today always :class:`ImageSource`).

    Args:
        path: an image file.
        uint16_scaling: see :class:`ImageSource`.
        options: reader options of other sources (unknown options are an error, so none is silently ignored).

    Raises:
        ImageReadError: the file cannot be read.
        TypeError: an option no reader understands.
    """
    if options:
        raise TypeError(f"open_scene: unknown option(s) {sorted(options)}")
    return ImageSource(path, uint16_scaling=uint16_scaling)


@dataclass(frozen=True)
class SceneInput:
    """A scene not opened yet.

    Attributes:
        key: the input as given (its path); results and messages use it.
        open: a callable returning the opened :class:`SceneSource` (called in the runner's reader thread).
    """

    key: str
    open: Callable[[], SceneSource]

    @classmethod
    def from_path(cls, path: str | os.PathLike, **options: Any) -> SceneInput:
        """A file opened with :func:`open_scene` (``options`` are passed on)."""
        return cls(str(path), lambda: open_scene(path, **options))

    @classmethod
    def from_source(cls, source: SceneSource) -> SceneInput:
        """An already opened source."""
        return cls(source.key, lambda: source)
