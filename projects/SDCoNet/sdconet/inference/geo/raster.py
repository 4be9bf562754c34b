"""A scene source over any raster GDAL reads (GeoTIFF, COG, VRT mosaics, JPEG 2000, ...), window by window.

:class:`RasterSource` opens a file with rasterio and reads only the windows it is asked for, so memory does not
grow with the raster (GDAL's block cache is capped at :data:`DEFAULT_CACHE_MB` unless ``GDAL_CACHEMAX`` is set).
It applies the same rules as every other reader of the project:

* **bands**: :func:`sdconet.data.bands.choose_bands` on the file's colour interpretation (``bands=`` / ``--bands``);
* **validity**: :func:`sdconet.data.bands.valid_pixels` (nodata value, alpha or mask band); invalid pixels are 0
  and a window without any valid pixel can be skipped by the caller (:meth:`RasterSource.read_with_mask`);
* **scaling**: :func:`sdconet.data.scaling.compute_scaling` once per raster, over the same
  :func:`~sdconet.data.scaling.stats_windows` as the in-memory reader, so the pixels of a window equal those that
  :func:`sdconet.data.image_io.read_image_rgb` gives for the same file (tested).

With ``target_gsd`` the raster is resampled on the fly (GDAL: ``average`` when shrinking, ``bilinear`` when
enlarging, on exact floating-point source windows): the source then presents a *virtual* frame of
``round(W * factor) x round(H * factor)`` pixels, ``factor = gsd / target_gsd``, whose windows the caller tiles as
usual; :meth:`RasterSource.to_raster_pixels` maps boxes of that frame back to the file's pixels.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np

from ...data.bands import BandChoice, choose_bands, valid_pixels
from ...data.errors import ImageReadError
from ...data.scaling import (
    DEFAULT_SCALING,
    BandScaling,
    check_scaling,
    compute_scaling,
    format_scaling,
    stats_windows,
)
from .georef import Georef

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CACHE_MB", "RESAMPLINGS", "RasterSource", "georef_of", "rasterio_available"]

#: GDAL block cache (MB) used unless the environment sets ``GDAL_CACHEMAX``.
DEFAULT_CACHE_MB = 256
#: Resampling methods accepted for ``--target-gsd`` ("auto": average when shrinking, bilinear when enlarging).
RESAMPLINGS = ("auto", "nearest", "bilinear", "cubic", "average", "lanczos")
# Factors this close to 1 are not resampled.
_NO_RESAMPLE_TOL = 1e-3

Window = tuple[int, int, int, int]


def rasterio_available() -> bool:
    """True when the ``geo`` extra (rasterio) is installed."""
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _import_rasterio():
    try:
        import rasterio
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "reading georeferenced rasters needs rasterio: pip install 'sdconet[geo]' (or pip install rasterio pyogrio)"
        ) from exc
    os.environ.setdefault("GDAL_CACHEMAX", str(DEFAULT_CACHE_MB))
    return rasterio


def georef_of(ds) -> Georef | None:
    """The :class:`Georef` of an open rasterio dataset: its affine transform, else an affine fit to its ground
    control points; None when the file has neither or no CRS."""
    import rasterio

    transform, crs, source = ds.transform, ds.crs, "transform"
    if transform.is_identity or crs is None:
        gcps, gcp_crs = ds.gcps
        if gcps and gcp_crs is not None:
            transform, crs, source = rasterio.transform.from_gcps(gcps), gcp_crs, "gcps"
        else:
            return None
    unit = 1.0
    if not crs.is_geographic:
        try:
            unit = float(crs.linear_units_factor[1])
        except Exception:  # noqa: BLE001 - CRSs without a linear unit: keep CRS units
            unit = 1.0
    return Georef(
        transform=tuple(float(v) for v in tuple(transform)[:6]),
        crs_wkt=crs.to_wkt(),
        crs_name=crs.to_string() or crs.name,
        is_geographic=bool(crs.is_geographic),
        unit_metres=unit,
        source=source,
        width=int(ds.width),
        height=int(ds.height),
    )


class RasterSource:
    """One raster read window by window (module docstring).

    Args:
        path: any file or VRT rasterio opens.
        bands: 1-based bands shown as R, G, B (one number: grey), or None for the band rule's default.
        scaling: ``"percentile"`` (default), ``"full"`` or ``"none"`` (:mod:`sdconet.data.scaling`).
        target_gsd: resample to this ground sample distance (metres per pixel), or None. Needs georeferencing.
        resampling: one of :data:`RESAMPLINGS` (used with ``target_gsd``).
        key: the scene's key (default: ``path`` as given).

    Attributes:
        key, path: as given.
        width, height: size of the frame the windows refer to (the resampled frame with ``target_gsd``).
        raster_width, raster_height: size of the file.
        factor: resampling factor (1.0 without ``target_gsd``).
        georef: :class:`Georef` of the **file's** pixels, or None when the file is not georeferenced.
        band_choice: :class:`~sdconet.data.bands.BandChoice`.
        scaling: the raster's :class:`~sdconet.data.scaling.BandScaling`.
        dtype: the file's pixel type.

    Raises:
        ImageReadError: the file cannot be opened, or its bands need ``bands`` (the message names the file).
        ValueError: ``target_gsd`` for a raster without georeferencing, or a bad argument.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        bands: Sequence[int] | None = None,
        scaling: str = DEFAULT_SCALING,
        target_gsd: float | None = None,
        resampling: str = "auto",
        key: str | None = None,
    ) -> None:
        rasterio = _import_rasterio()
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        check_scaling(scaling)
        if resampling not in RESAMPLINGS:
            raise ValueError(f"--resampling must be one of {', '.join(RESAMPLINGS)}, got {resampling!r}")
        self.path = str(path)
        self.key = self.path if key is None else key
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise ImageReadError(self.path, str(exc)) from exc
        try:
            self._setup(bands, scaling, target_gsd, resampling)
        except BaseException:
            self._ds.close()
            raise

    def _setup(self, bands, scaling: str, target_gsd: float | None, resampling: str) -> None:
        from rasterio.enums import Resampling

        ds = self._ds
        if ds.count < 1:
            raise ImageReadError(self.path, "the raster has no bands (a container of sub-datasets?)")
        interps = [ci.name for ci in ds.colorinterp]
        self.band_choice: BandChoice = choose_bands(ds.count, interps, bands, self.path)
        self._indexes = list(self.band_choice.unique)
        self.dtype = np.dtype(ds.dtypes[self._indexes[0] - 1])
        nodatas = [ds.nodatavals[i - 1] for i in self._indexes]
        self.nodata = next((float(v) for v in nodatas if v is not None), None)
        flags = {f.name for i in self._indexes for f in ds.mask_flag_enums[i - 1]}
        self._shared_mask = bool(flags & {"per_dataset", "alpha"})
        self._palette = None
        if self.band_choice.palette:
            cmap = ds.colormap(self._indexes[0])
            self._palette = np.zeros((max(cmap) + 1, 3), np.uint8)
            for k, rgba in cmap.items():
                self._palette[k] = rgba[:3]
        self.georef: Georef | None = georef_of(ds)
        self.raster_width, self.raster_height = int(ds.width), int(ds.height)
        self.factor = 1.0
        if target_gsd is not None:
            if not target_gsd > 0:
                raise ValueError(f"--target-gsd must be a positive number of metres, got {target_gsd}")
            if self.georef is None:
                raise ValueError(
                    f"--target-gsd needs a georeferenced raster; {self.path} has no CRS/transform (no GSD)"
                )
            factor = self.georef.mean_gsd() / float(target_gsd)
            if abs(factor - 1.0) > _NO_RESAMPLE_TOL:
                self.factor = factor
        self.width = max(1, round(self.raster_width * self.factor))
        self.height = max(1, round(self.raster_height * self.factor))
        if resampling == "auto":
            resampling = "average" if self.factor < 1 else "bilinear"
        self._resampling = Resampling[resampling]
        self.scaling: BandScaling = self._compute_scaling(scaling)

    # --------------------------------------------------------------------------------------------- reading
    def _read_native(self, col: float, row: float, w: float, h: float, out_hw: tuple[int, int] | None):
        """Selected bands of a raster window (floats allowed when ``out_hw`` is given) -> (h, w, k), valid."""
        from rasterio.enums import Resampling
        from rasterio.windows import Window as RWindow

        win = RWindow(col, row, w, h)
        kw = (
            {}
            if out_hw is None
            else {"out_shape": (len(self._indexes), *out_hw), "resampling": self._resampling}
        )
        values = np.moveaxis(self._ds.read(self._indexes, window=win, **kw), 0, -1)
        mask = None
        if self._shared_mask:
            mkw = {} if out_hw is None else {"out_shape": out_hw, "resampling": Resampling.nearest}
            mask = self._ds.read_masks(self._indexes[0], window=win, **mkw)
        return values, valid_pixels(values, self.nodata, mask)

    def _compute_scaling(self, mode: str) -> BandScaling:
        samples = (
            self._read_native(x0, y0, x1 - x0, y1 - y0, None)
            for x0, y0, x1, y1 in stats_windows(self.raster_width, self.raster_height)
        )
        return compute_scaling(samples, mode, self.dtype)

    def read_with_mask(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """Read a window of the (possibly resampled) frame.

        Args:
            window: ``(x0, y0, x1, y1)`` inside ``(0, 0, width, height)``.

        Returns:
            ``(rgb, valid)``: (h, w, 3) uint8 RGB with invalid pixels 0, and (h, w) bool validity or None when
            every pixel is valid.
        """
        x0, y0, x1, y1 = (int(v) for v in window)
        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ValueError(f"{self.key}: window {window} outside the {self.width}x{self.height} scene")
        if self.factor == 1.0:
            values, valid = self._read_native(x0, y0, x1 - x0, y1 - y0, None)
        else:
            f = self.factor
            col, row = x0 / f, y0 / f
            w = min(x1 / f, self.raster_width) - col
            h = min(y1 / f, self.raster_height) - row
            values, valid = self._read_native(col, row, w, h, (y1 - y0, x1 - x0))
        return self._to_rgb(values, valid), valid

    def read_thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """The whole frame shrunk so its long side is at most ``max_side`` (GDAL ``average``; overviews of a COG are
        used) -> ``(rgb, scale)`` with ``scale`` thumbnail pixels per frame pixel (<= 1)."""
        from rasterio.enums import Resampling
        from rasterio.windows import Window as RWindow

        scale = min(1.0, max_side / max(self.width, self.height))
        tw, th = max(1, round(self.width * scale)), max(1, round(self.height * scale))
        win = RWindow(0, 0, self.raster_width, self.raster_height)
        values = np.moveaxis(
            self._ds.read(
                self._indexes,
                window=win,
                out_shape=(len(self._indexes), th, tw),
                resampling=Resampling.average,
            ),
            0,
            -1,
        )
        mask = None
        if self._shared_mask:
            mask = self._ds.read_masks(self._indexes[0], window=win, out_shape=(th, tw))
        valid = valid_pixels(values, self.nodata, mask)
        return self._to_rgb(values, valid), tw / self.width

    def read(self, window: Window) -> np.ndarray:
        """(h, w, 3) uint8 RGB of a window (:meth:`read_with_mask` without the mask)."""
        return self.read_with_mask(window)[0]

    def _to_rgb(self, values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        choice = self.band_choice
        if choice.palette:
            rgb = self._palette[np.clip(values[..., 0].astype(np.int64), 0, len(self._palette) - 1)]
            if valid is not None:
                rgb[~valid] = 0
            return rgb
        scaled = self.scaling.apply(values, valid)
        if tuple(self._indexes) == choice.indexes:
            return scaled
        return np.ascontiguousarray(scaled[..., [self._indexes.index(b) for b in choice.indexes]])

    # ------------------------------------------------------------------------------------------- frames
    @property
    def frame_georef(self) -> Georef | None:
        """Georeferencing of the frame the windows refer to (resampled with ``target_gsd``)."""
        if self.georef is None or self.factor == 1.0:
            return self.georef
        return self.georef.scaled(self.factor)

    def to_raster_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) boxes in the window frame -> the file's pixels (divided by ``factor``), float32."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.factor != 1.0:
            boxes = boxes / self.factor
        return boxes.astype(np.float32)

    def describe(self) -> str:
        """One log line: size, bands, type, CRS, GSD, resampling, scaling."""
        parts = [
            f"{self.raster_width}x{self.raster_height}",
            self.band_choice.describe(),
            str(self.dtype),
        ]
        if self.georef is not None:
            gx, gy = self.georef.gsd()
            parts.append(f"{self.georef.crs_name}, GSD {gx:.3g} x {gy:.3g} m")
            if self.georef.source == "gcps":
                parts.append("georeferenced by an affine fit to its GCPs")
        else:
            parts.append("not georeferenced")
        if self.factor != 1.0:
            parts.append(
                f"resampled x{self.factor:.4g} to {self.width}x{self.height} ({self._resampling.name})"
            )
        parts.append(format_scaling(self.scaling, self._indexes))
        return "; ".join(parts)

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def gsd(self) -> float | None:
        """Mean GSD of the file in metres, or None."""
        return None if self.georef is None else self.georef.mean_gsd()

    def __repr__(self) -> str:
        return f"RasterSource({self.key!r}, {self.width}x{self.height}, factor={self.factor:.4g})"
