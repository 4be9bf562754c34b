"""Mosaic a folder of georeferenced tiles into one scene: a GDAL VRT (what ``gdalbuildvrt`` writes, for users who
have only the rasterio wheel, not the GDAL command-line tools).

The tiles must share the CRS, the band count, the pixel type and the pixel size, and be north-up (no rotation);
they may have gaps (left as nodata, or 0) and overlaps (later files win, as with ``gdalbuildvrt``). The VRT refers
to the tiles by paths relative to itself, so the folder can move with it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from ...data.atomic import atomic_write_text

__all__ = ["build_vrt"]

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def build_vrt(paths: Sequence[str | os.PathLike], vrt_path: str | os.PathLike, rel_tol: float = 1e-6) -> Path:
    """Write a VRT mosaic of ``paths`` to ``vrt_path``.

    Args:
        paths: the tiles (any format GDAL reads, georeferenced).
        vrt_path: the ``.vrt`` file to write (atomically).
        rel_tol: relative tolerance on equal pixel sizes and whole-pixel offsets.

    Returns:
        ``vrt_path`` as a Path.

    Raises:
        ValueError: no tiles, or tiles that cannot be mosaicked (the message names the first offending file).
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    if not paths:
        raise ValueError(f"{vrt_path}: no tiles to mosaic")
    vrt_path = Path(vrt_path)
    infos = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for p in paths:
            with rasterio.open(p) as ds:
                infos.append(
                    {
                        "path": Path(p),
                        "crs": ds.crs,
                        "transform": ds.transform,
                        "width": ds.width,
                        "height": ds.height,
                        "count": ds.count,
                        "dtype": ds.dtypes[0],
                        "nodata": ds.nodata,
                        "interps": [ci.name for ci in ds.colorinterp],
                    }
                )
    ref = infos[0]
    px, py = ref["transform"].a, ref["transform"].e
    for info in infos:
        t = info["transform"]
        name = info["path"]
        if info["crs"] is None or t.is_identity:
            raise ValueError(f"{name}: not georeferenced, cannot be placed in a mosaic")
        if info["crs"] != ref["crs"]:
            raise ValueError(f"{name}: CRS {info['crs']} differs from {ref['crs']} of {ref['path']}")
        if t.b != 0 or t.d != 0:
            raise ValueError(f"{name}: rotated rasters cannot be mosaicked by a VRT here")
        if abs(t.a - px) > rel_tol * abs(px) or abs(t.e - py) > rel_tol * abs(py):
            raise ValueError(f"{name}: pixel size ({t.a}, {t.e}) differs from ({px}, {py}) of {ref['path']}")
        if (info["count"], info["dtype"]) != (ref["count"], ref["dtype"]):
            raise ValueError(
                f"{name}: {info['count']} {info['dtype']} bands differ from {ref['count']} {ref['dtype']}"
            )
    if ref["dtype"] not in _GDAL_TYPES:
        raise ValueError(f"{ref['path']}: pixel type {ref['dtype']} is not supported in a VRT mosaic")
    # Mosaic extent in map coordinates (north-up: x grows with columns, y shrinks with rows when py < 0).
    xs = [i["transform"].c for i in infos] + [i["transform"].c + i["width"] * px for i in infos]
    ys = [i["transform"].f for i in infos] + [i["transform"].f + i["height"] * py for i in infos]
    x0 = min(xs) if px > 0 else max(xs)
    y0 = max(ys) if py < 0 else min(ys)
    width = round((max(xs) - min(xs)) / abs(px))
    height = round((max(ys) - min(ys)) / abs(py))
    sources = []
    for info in infos:
        col = (info["transform"].c - x0) / px
        row = (info["transform"].f - y0) / py
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise ValueError(f"{info['path']}: not aligned to the pixel grid of {ref['path']}")
        rel = os.path.relpath(info["path"].resolve(), vrt_path.resolve().parent)
        sources.append((rel, round(col), round(row), info["width"], info["height"]))
    nodata = ref["nodata"]
    bands_xml = []
    for b in range(1, ref["count"] + 1):
        interp = ref["interps"][b - 1] if b - 1 < len(ref["interps"]) else "undefined"
        lines = [f'  <VRTRasterBand dataType="{_GDAL_TYPES[ref["dtype"]]}" band="{b}">']
        lines.append(f"    <ColorInterp>{interp.capitalize()}</ColorInterp>")
        if nodata is not None:
            lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
        for rel, col, row, w, h in sources:
            tag = "ComplexSource" if nodata is not None else "SimpleSource"
            lines += [
                f"    <{tag}>",
                f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
                f"      <SourceBand>{b}</SourceBand>",
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                f'      <DstRect xOff="{col}" yOff="{row}" xSize="{w}" ySize="{h}"/>',
            ]
            if nodata is not None:
                lines.append(f"      <NODATA>{nodata!r}</NODATA>")
            lines.append(f"    </{tag}>")
        lines.append("  </VRTRasterBand>")
        bands_xml.append("\n".join(lines))
    gt = (x0, px, 0.0, y0, 0.0, py)
    xml = "\n".join(
        [
            f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
            f"  <SRS>{escape(ref['crs'].to_wkt())}</SRS>",
            f"  <GeoTransform>{', '.join(repr(float(v)) for v in gt)}</GeoTransform>",
            *bands_xml,
            "</VRTDataset>",
            "",
        ]
    )
    atomic_write_text(vrt_path, xml)
    return vrt_path
