"""Pixel -> map coordinates of a georeferenced raster, and its ground sample distance (numpy only).

Pixel coordinates are continuous: pixel ``(col, row)`` spans ``[col, col+1) x [row, row+1)``, as the boxes of
:mod:`sdconet.inference.scene` (and COCO) use them. The affine ``transform`` maps them to the raster's CRS,
``x = a*col + b*row + c``, ``y = d*col + e*row + f`` (rasterio/affine order; GDAL's geotransform is
``(c, a, b, f, d, e)``), and always refers to pixel *corners*: for a "pixel-is-point" GeoTIFF
(``AREA_OR_POINT=Point``) GDAL already shifts the tie point by half a pixel when it opens the file, so the same
formula holds (tested). Rotated and sheared transforms (``b``, ``d`` not zero) are supported: a pixel box becomes a
rotated quadrilateral in map coordinates, which is why boxes are exported as polygons of their four corners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Georef", "ring_area"]

# WGS84 semi-major axis and flattening, for metres per degree in geographic CRSs.
_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563


@dataclass(frozen=True)
class Georef:
    """Where a raster's pixels lie on the ground.

    Attributes:
        transform: ``(a, b, c, d, e, f)`` pixel-corner affine transform (module docstring).
        crs_wkt: the CRS as WKT (what GeoPackage and PROJ need), or None when the file has none.
        crs_name: a short name for logs and summaries (e.g. ``EPSG:32633``).
        is_geographic: the CRS is in degrees (longitude/latitude).
        unit_metres: metres per CRS unit for projected CRSs (1.0 for metres, 0.3048 for feet).
        source: ``"transform"`` or ``"gcps"`` (an affine fit to ground control points, approximate).
        width: raster width in pixels (for the centre latitude of geographic CRSs).
        height: raster height in pixels.
    """

    transform: tuple[float, float, float, float, float, float]
    crs_wkt: str | None
    crs_name: str
    is_geographic: bool = False
    unit_metres: float = 1.0
    source: str = "transform"
    width: int = 0
    height: int = 0

    # --------------------------------------------------------------------------------------------- mapping
    def pixel_to_map(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous pixel coordinates -> map coordinates in the raster's CRS (float64 arrays)."""
        a, b, c, d, e, f = self.transform
        cols = np.asarray(cols, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.float64)
        return a * cols + b * rows + c, d * cols + e * rows + f

    def box_rings(self, boxes: np.ndarray) -> np.ndarray:
        """Pixel boxes -> closed polygon rings in map coordinates.

        Args:
            boxes: (N, 4) ``x1, y1, x2, y2`` in raster pixels.

        Returns:
            (N, 5, 2) float64 rings (corner order top-left, bottom-left, bottom-right, top-right in pixel space,
            then the first corner again), counter-clockwise in map coordinates for any transform whose
            determinant is negative (north-up rasters) and for the mirrored case too (rings are flipped as needed).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        x1, y1, x2, y2 = boxes.T
        cols = np.stack([x1, x1, x2, x2, x1], axis=1)
        rows = np.stack([y1, y2, y2, y1, y1], axis=1)
        mx, my = self.pixel_to_map(cols, rows)
        rings = np.stack([mx, my], axis=2)
        flip = ring_area(rings) < 0
        rings[flip] = rings[flip, ::-1]
        return rings

    # -------------------------------------------------------------------------------------------------- GSD
    def pixel_size(self) -> tuple[float, float]:
        """Pixel width and height in CRS units (lengths of the transform's column and row vectors)."""
        a, b, _, d, e, _ = self.transform
        return math.hypot(a, d), math.hypot(b, e)

    def gsd(self) -> tuple[float, float]:
        """Ground sample distance ``(along x, along y)`` in metres.

        Projected CRSs: pixel size x the CRS unit. Geographic CRSs: pixel size in degrees converted with the WGS84
        ellipsoid's metres per degree at the raster's centre latitude.
        """
        px, py = self.pixel_size()
        if not self.is_geographic:
            return px * self.unit_metres, py * self.unit_metres
        _, lat = self.pixel_to_map(np.array(self.width / 2), np.array(self.height / 2))
        phi = math.radians(float(np.clip(lat, -90.0, 90.0)))
        e2 = _WGS84_F * (2 - _WGS84_F)
        w = math.sqrt(1 - e2 * math.sin(phi) ** 2)
        m_lat = math.pi / 180 * _WGS84_A * (1 - e2) / w**3  # metres per degree of latitude
        m_lon = math.pi / 180 * _WGS84_A * math.cos(phi) / w  # metres per degree of longitude
        a, b, _, d, e, _ = self.transform
        return math.hypot(a * m_lon, d * m_lat), math.hypot(b * m_lon, e * m_lat)

    def mean_gsd(self) -> float:
        """Geometric mean of :meth:`gsd` (metres)."""
        gx, gy = self.gsd()
        return math.sqrt(gx * gy)

    def scaled(self, factor: float) -> Georef:
        """The georeferencing of the same raster resampled by ``factor`` (2 = twice as many pixels per side)."""
        a, b, c, d, e, f = self.transform
        t = (a / factor, b / factor, c, d / factor, e / factor, f)
        return replace(
            self, transform=t, width=round(self.width * factor), height=round(self.height * factor)
        )

    def to_dict(self) -> dict:
        gx, gy = self.gsd()
        return {
            "crs": self.crs_name,
            "transform": list(self.transform),
            "georeferencing": self.source,
            "gsd_m": [round(gx, 6), round(gy, 6)],
        }


def ring_area(rings: np.ndarray) -> np.ndarray:
    """Signed shoelace areas of (N, k, 2) closed rings: positive when counter-clockwise (x right, y up)."""
    x, y = rings[..., 0], rings[..., 1]
    return 0.5 * (x[:, :-1] * y[:, 1:] - x[:, 1:] * y[:, :-1]).sum(axis=1)
