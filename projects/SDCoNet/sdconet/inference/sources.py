"""Scene sources: one input scene of the whole-scene prediction loop, read window by window.

A *scene source* (:class:`SceneSource`) has a ``key`` (the input as given, e.g. its path), a ``width`` and
``height`` in scene pixels, ``read(window) -> (h, w, 3) uint8 RGB`` for a window ``(x0, y0, x1, y1)`` (half-open,
scene pixels, inside the scene), ``close()``, and ``georef`` (None for plain images; a georeferenced source gives
what is needed to map scene pixels to map coordinates).

* :class:`ImageSource` reads a file with :func:`sdconet.data.image_io.read_image` (the dataset tools' reader:
  grayscale, RGBA, palette, 16-bit and float rasters become 8-bit RGB) and keeps the whole image in memory.
* :class:`ArraySource` wraps an image already in memory (the Python API, :func:`~sdconet.inference.scene.predict_scene`).
* :class:`~sdconet.inference.geo.raster.RasterSource` reads any raster GDAL reads (GeoTIFF, COG, VRT, ...) window by
  window through rasterio (the ``geo`` extra), with georeferencing, nodata masks and ``--target-gsd`` resampling.

Optional methods the loop uses when a source has them: ``read_with_mask(window) -> (rgb, valid)`` (a window without
any valid pixel is skipped and counted), ``read_thumbnail(max_side) -> (rgb, scale)`` (pictures and the whole-scene
pass of huge scenes), ``to_raster_pixels(boxes)`` (boxes of a resampled frame back to the file's pixels).

:func:`open_scene` is the one place that decides which source reads a path (PNG/JPEG/BMP/WebP: :class:`ImageSource`;
other rasters: ``RasterSource`` when rasterio is installed). :class:`SceneInput` is a not-yet-opened scene: the runner opens it lazily, in its
reader thread, so that a file that cannot be read fails that scene only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from ..data.image_io import read_image
from ..data.scaling import DEFAULT_SCALING
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
    """An image file read whole into memory (:func:`~sdconet.data.image_io.read_image`, with its nodata mask).

    Args:
        path: the image file.
        scaling: ``"percentile"`` (default), ``"full"`` or ``"none"`` (16-bit / float rasters to 8 bits,
            :mod:`sdconet.data.scaling`).
        bands: 1-based bands shown as R, G, B (:mod:`sdconet.data.bands`), or None.

    Raises:
        ImageReadError: the file is missing, corrupt or of an unsupported kind, or its bands need ``bands`` (the
            message names it).
    """

    def __init__(
        self, path: str | os.PathLike, scaling: str = DEFAULT_SCALING, bands: Sequence[int] | None = None
    ) -> None:
        image, self.valid = read_image(path, scaling, bands)
        super().__init__(image, key=str(path))
        self.path = Path(path)

    def read_with_mask(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """A window and its validity (False at nodata / alpha-0 pixels of TIFFs; None when all are valid)."""
        x0, y0, x1, y1 = check_window(window, self.width, self.height, self.key)
        valid = None if self.valid is None else self.valid[y0:y1, x0:x1]
        return self.image[y0:y1, x0:x1], valid

    def read_thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """The image shrunk (area interpolation) so its long side is at most ``max_side`` -> ``(rgb, scale)``."""
        scale = min(1.0, max_side / max(self.width, self.height))
        if scale >= 1.0:
            return self.image, 1.0
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        return cv2.resize(self.image, size, interpolation=cv2.INTER_AREA), size[0] / self.width


#: Extensions read whole by Pillow/OpenCV (today's path); every other raster goes through rasterio when installed.
PLAIN_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
READERS = ("auto", "image", "raster")


def open_scene(
    path: str | os.PathLike,
    *,
    scaling: str = DEFAULT_SCALING,
    bands: Sequence[int] | None = None,
    target_gsd: float | None = None,
    resampling: str = "auto",
    reader: str = "auto",
    require_georef: bool = False,
) -> SceneSource:
    """The source that reads ``path``: the one place that decides.

    * PNG / JPEG / BMP / WebP: :class:`ImageSource` (whole image in memory).
    * Anything else (GeoTIFF, COG, VRT, JPEG 2000, ...): :class:`~sdconet.inference.geo.raster.RasterSource`
      (window by window, georeferenced) when rasterio is installed (``pip install 'sdconet[geo]'``), else
      :class:`ImageSource` (TIFFs through tifffile).

    Args:
        path: the scene file.
        scaling, bands: the band rule and 16-bit scaling of every reader.
        target_gsd: resample to this GSD (metres per pixel); needs a georeferenced raster.
        resampling: resampling method for ``target_gsd``.
        reader: ``"auto"`` (above), ``"image"`` or ``"raster"`` to force one.
        require_georef: raise ValueError when the scene has no georeferencing (``--geo``).

    Raises:
        ImageReadError: the file cannot be read (or its bands need ``bands``).
        ValueError: ``target_gsd`` / ``require_georef`` for a scene without georeferencing, or a bad option.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    plain = Path(path).suffix.lower() in PLAIN_IMAGE_EXTENSIONS
    use_raster = reader == "raster" or (reader == "auto" and not plain and _rasterio_available())
    if use_raster:
        from .geo.raster import RasterSource

        source = RasterSource(
            path, bands=bands, scaling=scaling, target_gsd=target_gsd, resampling=resampling
        )
    else:
        if target_gsd is not None or require_georef:
            what = "--target-gsd" if target_gsd is not None else "--geo"
            why = "a PNG/JPEG has no georeferencing" if plain else "reading georeferencing needs rasterio"
            raise ValueError(
                f"{what}: {path}: {why} (use a GeoTIFF/COG/VRT"
                + ("" if plain else " and pip install 'sdconet[geo]'")
                + ")"
            )
        source = ImageSource(path, scaling=scaling, bands=bands)
    if require_georef and getattr(source, "georef", None) is None:
        source.close()
        raise ValueError(f"--geo: {path} has no georeferencing (no CRS and geotransform or GCPs)")
    return source


def _rasterio_available() -> bool:
    from .geo.raster import rasterio_available

    return rasterio_available()


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
