"""sdconet.inference.geo: georeferenced rasters in (rasterio), GIS vector files out (GeoJSON, GeoPackage).

Needs the optional ``geo`` extra (``pip install 'sdconet[geo]'``: rasterio and pyogrio) except :class:`Georef`, which
is numpy only. Names are imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Georef": "georef",
    "RasterSource": "raster",
    "georef_of": "raster",
    "rasterio_available": "raster",
    "detection_table": "vector",
    "write_geojson": "vector",
    "write_gpkg": "vector",
    "to_wgs84": "vector",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
