"""16-bit and floating-point rasters to 8 bits: one function for the dataset tools and for inference.

A model sees at inference what it saw in training only if both convert pixels the same way, so every reader
(:func:`sdconet.data.image_io.read_image_rgb` for the dataset tools and small images, the windowed rasterio reader of
:mod:`sdconet.inference.geo.raster`) uses :func:`compute_scaling` once per raster and :meth:`BandScaling.apply` on
every tile. The statistics come from the **whole raster** (never from a tile, so neighbouring tiles match): every
pixel when the raster has at most :data:`STATS_FULL_PIXELS` pixels, else a fixed grid of
:data:`STATS_GRID` x :data:`STATS_GRID` sample windows of :data:`STATS_WINDOW` pixels spread over it
(:func:`stats_windows`; the same windows for every reader, so the in-memory and the windowed paths agree exactly).
Pixels marked invalid (nodata, alpha 0, non-finite) are left out of the statistics and come out as 0.

Modes (``--scaling``), per selected band:

* ``"percentile"`` (default): the band's 2nd-98th percentile (:data:`PERCENTILE_RANGE`, QGIS' "cumulative count
  cut") is stretched to 0-255 and clipped; right for 11/12/16-bit sensors and reflectance. A constant band gets
  the ``"full"`` map.
* ``"full"``: the 16-bit range 0-65535 maps linearly onto 0-255 (``v / 257``; signed values clip at 0); floats
  are taken as reflectance in [0, 1] (x 255) when the raster's maximum is <= 1, else as 0-255 values.
* ``"none"``: values are used as 8-bit values as they are (clipped to 0-255), for 16-bit files holding 8-bit data.

8-bit rasters are never scaled (whatever the mode), so tiles cut from 8-bit datasets do not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_SCALING",
    "PERCENTILE_RANGE",
    "SCALINGS",
    "STATS_FULL_PIXELS",
    "BandScaling",
    "compute_scaling",
    "scale_array",
    "scaling_for_array",
    "stats_windows",
]

SCALINGS = ("percentile", "full", "none")
DEFAULT_SCALING = "percentile"
#: Percentiles stretched to 0 and 255 by ``"percentile"``.
PERCENTILE_RANGE = (2.0, 98.0)
#: Rasters with at most this many pixels take their statistics from every pixel.
STATS_FULL_PIXELS = 4096 * 4096
#: Larger rasters: a STATS_GRID x STATS_GRID grid of sample windows ...
STATS_GRID = 16
#: ... of STATS_WINDOW x STATS_WINDOW pixels (4.2 MPix in all).
STATS_WINDOW = 128
# Rows converted at a time by scale_array (bounds the float32 working memory of whole-image reads).
_CHUNK_ROWS = 1024

Window = tuple[int, int, int, int]


def check_scaling(mode: str) -> str:
    """Return ``mode`` or raise ValueError naming ``--scaling``."""
    if mode not in SCALINGS:
        raise ValueError(f"--scaling must be one of {', '.join(SCALINGS)}, got {mode!r}")
    return mode


def stats_windows(width: int, height: int) -> list[Window]:
    """Windows ``(x0, y0, x1, y1)`` whose pixels give a raster's scaling statistics (see the module docstring)."""
    if width * height <= STATS_FULL_PIXELS:
        return [(0, 0, width, height)]
    side_x, side_y = min(STATS_WINDOW, width), min(STATS_WINDOW, height)
    xs = np.linspace(0, width - side_x, STATS_GRID).round().astype(int)
    ys = np.linspace(0, height - side_y, STATS_GRID).round().astype(int)
    return [(int(x), int(y), int(x) + side_x, int(y) + side_y) for y in ys for x in xs]


@dataclass(frozen=True)
class BandScaling:
    """A per-band linear map to 8 bits: ``out = clip(rint((v - low) * 255 / (high - low)), 0, 255)``.

    Attributes:
        mode: the ``--scaling`` mode it was computed with (``"uint8"`` for 8-bit data, used as stored).
        low: per band, the value mapped to 0.
        high: per band, the value mapped to 255.
    """

    mode: str
    low: tuple[float, ...]
    high: tuple[float, ...]

    @property
    def identity(self) -> bool:
        return self.mode == "uint8"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "low": list(self.low), "high": list(self.high)}

    def apply(self, data: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Scale a tile (or a whole image).

        Args:
            data: (h, w, C) array of the raster's dtype, C = number of bands the scaling was computed for.
            valid: (h, w) bool, False where the pixel is nodata/masked (set to 0), or None.

        Returns:
            (h, w, C) uint8.
        """
        if data.ndim != 3 or data.shape[2] != len(self.low):
            raise ValueError(f"BandScaling.apply: expected (h, w, {len(self.low)}) data, got {data.shape}")
        if self.identity and data.dtype == np.uint8:
            out = data.copy()
        elif data.dtype == np.bool_:
            out = data.astype(np.uint8) * 255
        else:
            out = np.empty(data.shape, dtype=np.uint8)
            low = np.asarray(self.low, dtype=np.float32)
            gain = np.float32(255.0) / np.maximum(np.asarray(self.high, np.float32) - low, np.float32(1e-12))
            for r in range(0, data.shape[0], _CHUNK_ROWS):
                part = data[r : r + _CHUNK_ROWS].astype(np.float32)
                part = np.nan_to_num(part, nan=0.0, posinf=0.0, neginf=0.0)
                part -= low
                part *= gain
                np.rint(part, out=part)
                np.clip(part, 0, 255, out=part)
                out[r : r + _CHUNK_ROWS] = part.astype(np.uint8)
            if np.issubdtype(data.dtype, np.floating):
                out[~np.isfinite(data).all(axis=2)] = 0
        if valid is not None:
            out[~np.asarray(valid, dtype=bool)] = 0
        return out


def compute_scaling(
    samples: Iterable[tuple[np.ndarray, np.ndarray | None]], mode: str, dtype: np.dtype | type
) -> BandScaling:
    """The per-band scaling of a raster from its statistics samples.

    Args:
        samples: ``(values, valid)`` pairs, ``values`` (h, w, C) arrays of the raster's dtype (its
            :func:`stats_windows`), ``valid`` (h, w) bool or None.
        mode: ``"percentile"``, ``"full"`` or ``"none"``.
        dtype: the raster's pixel type.

    Returns:
        :class:`BandScaling` (mode ``"uint8"``, identity, for 8-bit rasters).
    """
    check_scaling(mode)
    dtype = np.dtype(dtype)
    pixels = []
    channels = None
    for values, valid in samples:
        channels = values.shape[2]
        flat = values.reshape(-1, channels)
        keep = np.ones(len(flat), bool) if valid is None else np.asarray(valid, bool).reshape(-1)
        if np.issubdtype(dtype, np.floating):
            keep &= np.isfinite(flat).all(axis=1)
        pixels.append(flat[keep])
    if channels is None:
        raise ValueError("compute_scaling: no samples")
    n = channels
    if dtype == np.uint8 or dtype == np.bool_:
        return BandScaling("uint8", (0.0,) * n, (255.0,) * n)
    data = np.concatenate(pixels) if pixels else np.zeros((0, n))
    is_float = np.issubdtype(dtype, np.floating)
    if mode == "none":
        return BandScaling(mode, (0.0,) * n, (255.0,) * n)
    if mode == "full" or not len(data):
        if is_float:
            top = 1.0 if (not len(data) or float(np.max(data)) <= 1.0) else 255.0
        else:
            top = 65535.0
        return BandScaling(mode, (0.0,) * n, (top,) * n)
    full = compute_scaling([(data.reshape(-1, 1, n), None)], "full", dtype)
    low, high = [], []
    for c in range(n):
        lo, hi = (float(v) for v in np.percentile(data[:, c].astype(np.float64), PERCENTILE_RANGE))
        if hi <= lo:  # a constant band: the full range keeps its value visible
            lo, hi = full.low[c], full.high[c]
        low.append(lo)
        high.append(hi)
    return BandScaling(mode, tuple(low), tuple(high))


def scaling_for_array(image: np.ndarray, mode: str, valid: np.ndarray | None = None) -> BandScaling:
    """:func:`compute_scaling` of an in-memory (H, W, C) raster over its :func:`stats_windows`."""
    h, w = image.shape[:2]
    windows = stats_windows(w, h)
    samples = (
        (image[y0:y1, x0:x1], None if valid is None else valid[y0:y1, x0:x1]) for x0, y0, x1, y1 in windows
    )
    return compute_scaling(samples, mode, image.dtype)


def scale_array(image: np.ndarray, mode: str, valid: np.ndarray | None = None) -> np.ndarray:
    """A whole in-memory (H, W, C) raster to uint8 (statistics from the raster itself)."""
    return scaling_for_array(image, mode, valid).apply(image, valid)


def format_scaling(scaling: BandScaling, bands: Sequence[int] | None = None) -> str:
    """One log line, e.g. ``percentile: band 3 [112, 1890], band 2 [...]``."""
    if scaling.identity:
        return "8-bit, used as stored"
    names = bands or range(1, len(scaling.low) + 1)
    parts = [f"band {b} [{lo:.6g}, {hi:.6g}]" for b, lo, hi in zip(names, scaling.low, scaling.high)]
    return f"{scaling.mode}: " + ", ".join(parts)
