"""Detections as GIS vector files: GeoJSON (RFC 7946, WGS84) and GeoPackage (the raster's own CRS).

Every detection becomes a polygon of its pixel box's four corners mapped through the raster's affine transform
(:meth:`Georef.box_rings`: a rotated raster gives rotated quadrilaterals), with the attributes ``scene``,
``det_id``, ``class_name``, ``category_id``, ``score`` and the pixel box ``px_x1 px_y1 px_x2 px_y2`` (raster pixels).

* **GeoJSON** follows RFC 7946: coordinates are always WGS84 longitude, latitude (reprojected with PROJ through
  rasterio, whatever the raster's CRS), exterior rings counter-clockwise, no ``crs`` member, 7 decimals (about 1 cm).
  Written by this module with the standard ``json`` module, atomically.
* **GeoPackage** keeps the raster's CRS (no reprojection, exact map coordinates), written with pyogrio (GDAL's OGR,
  vectorised: one call per scene however many detections), atomically (a temporary file, then renamed).

pyogrio was chosen over fiona: it writes whole columns in one call (fiona writes record by record in Python), it is
the default I/O engine of GeoPandas 1.x (maintained by the same team) and its wheels bundle GDAL like rasterio's.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...data.atomic import atomic_write_text
from .georef import Georef, ring_area

__all__ = ["GEO_FIELDS", "detection_table", "polygons_wkb", "to_wgs84", "write_geojson", "write_gpkg"]

#: Attribute columns of every feature, in order.
GEO_FIELDS = ("scene", "det_id", "class_name", "category_id", "score", "px_x1", "px_y1", "px_x2", "px_y2")
_DECIMALS = 7


def detection_table(
    scene: str,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """The attribute columns (:data:`GEO_FIELDS`) of one scene's detections.

    Args:
        scene: the scene key (input path).
        boxes: (N, 4) ``x1, y1, x2, y2`` in raster pixels.
        scores: (N,).
        labels: (N,) class indices.
        class_names: name per class index.
        category_ids: COCO category id per class index (default ``index + 1``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    cats = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    return {
        "scene": np.array([scene] * len(labels), dtype=object),
        "det_id": np.arange(len(labels), dtype=np.int64),
        "class_name": np.array([class_names[k] for k in labels], dtype=object),
        "category_id": np.array([cats[k] for k in labels], dtype=np.int64),
        "score": np.asarray(scores, dtype=np.float64).reshape(-1),
        "px_x1": boxes[:, 0],
        "px_y1": boxes[:, 1],
        "px_x2": boxes[:, 2],
        "px_y2": boxes[:, 3],
    }


def to_wgs84(rings: np.ndarray, crs_wkt: str) -> np.ndarray:
    """(N, k, 2) map coordinates in ``crs_wkt`` -> (N, k, 2) WGS84 longitude, latitude (degrees)."""
    from rasterio.warp import transform

    rings = np.asarray(rings, dtype=np.float64)
    if not rings.size:
        return rings.copy()
    xs, ys = transform(crs_wkt, "EPSG:4326", rings[..., 0].ravel(), rings[..., 1].ravel())
    return np.stack([np.asarray(xs), np.asarray(ys)], axis=-1).reshape(rings.shape)


def _json_value(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def write_geojson(
    path: str | os.PathLike, georef: Georef, boxes: np.ndarray, table: dict[str, np.ndarray]
) -> int:
    """Write one scene's detections as an RFC 7946 FeatureCollection (module docstring).

    Args:
        path: the ``.geojson`` file (written atomically).
        georef: georeferencing of the raster the ``boxes`` refer to (must have a CRS).
        boxes: (N, 4) raster-pixel boxes.
        table: :func:`detection_table` columns.

    Returns:
        The number of features written.
    """
    if georef.crs_wkt is None:
        raise ValueError(f"{path}: GeoJSON needs a CRS to reproject to WGS84")
    rings = to_wgs84(georef.box_rings(boxes), georef.crs_wkt)
    flip = ring_area(rings) < 0 if len(rings) else np.zeros(0, bool)
    rings[flip] = rings[flip, ::-1]
    rings = np.round(rings, _DECIMALS)
    features = []
    names = list(table)
    for i, ring in enumerate(rings):
        props = {k: _json_value(table[k][i]) for k in names}
        props["score"] = round(float(props["score"]), 6)
        features.append(
            {
                "type": "Feature",
                "id": i,
                "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]},
                "properties": props,
            }
        )
    collection: dict = {"type": "FeatureCollection", "features": features}
    if len(rings):
        lo, hi = rings.reshape(-1, 2).min(0), rings.reshape(-1, 2).max(0)
        collection["bbox"] = [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]
    atomic_write_text(path, json.dumps(collection, separators=(",", ":")) + "\n")
    return len(features)


def polygons_wkb(rings: np.ndarray) -> np.ndarray:
    """(N, k, 2) closed rings -> object array of little-endian WKB Polygons (one exterior ring each)."""
    rings = np.asarray(rings, dtype="<f8")
    out = np.empty(len(rings), dtype=object)
    for i, ring in enumerate(rings):
        out[i] = struct.pack("<BIII", 1, 3, 1, len(ring)) + ring.tobytes()
    return out


def write_gpkg(
    path: str | os.PathLike,
    georef: Georef,
    boxes: np.ndarray,
    table: dict[str, np.ndarray],
    layer: str = "detections",
) -> int:
    """Write one scene's detections as a GeoPackage layer in the raster's CRS (module docstring).

    Returns:
        The number of features written.
    """
    from pyogrio.raw import write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rings = georef.box_rings(boxes)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.gpkg")
    if tmp.exists():
        tmp.unlink()
    fields = list(table)
    data = [table[k] if table[k].dtype != object else table[k].astype(str) for k in fields]
    try:
        write(
            str(tmp),
            geometry=polygons_wkb(rings),
            field_data=data,
            fields=fields,
            layer=layer,
            driver="GPKG",
            geometry_type="Polygon",
            crs=georef.crs_wkt,
        )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(rings)
