"""Georeferenced rasters: windowed reading, band rule, scaling, GSD/resampling, VRT/COG, pixel->map, GeoJSON/GPKG.

A synthetic uint16 4-band GeoTIFF in UTM zone 33N with a nodata border, whose size is not a multiple of the tile.
"""

import json
import math

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")

from rasterio.transform import Affine, from_origin  # noqa: E402

from sdconet.data.bands import BandSelectionError  # noqa: E402
from sdconet.data.image_io import read_image_rgb  # noqa: E402
from sdconet.data.tiler import tile_windows  # noqa: E402
from sdconet.inference.geo.georef import Georef  # noqa: E402
from sdconet.inference.geo.raster import RasterSource  # noqa: E402
from sdconet.inference.geo.vector import detection_table, write_geojson, write_gpkg  # noqa: E402
from sdconet.inference.geo.vrt import build_vrt  # noqa: E402

W, H = 333, 277
GSD = 0.5
# Pixel (200, 200) lies at (500000, 0): UTM 33N's central meridian on the equator, i.e. longitude 15, latitude 0.
ORIGIN = (500000.0 - 200 * GSD, 200 * GSD)
UTM33 = "EPSG:32633"


def _bands():
    """4 bands with different, recognisable content; a 10-px nodata (0) border on top and left."""
    rng = np.random.default_rng(0)
    data = np.empty((4, H, W), np.uint16)
    for b in range(4):
        data[b] = rng.integers(300 + 1000 * b, 1200 + 1000 * b, (H, W))
    data[:, :10, :] = 0
    data[:, :, :10] = 0
    return data


def write_geotiff(path, data=None, transform=None, crs=UTM33, tiled=True, **extra):
    data = _bands() if data is None else data
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform or from_origin(*ORIGIN, GSD, GSD),
        "nodata": 0,
        "photometric": "MINISBLACK",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory):
    return write_geotiff(tmp_path_factory.mktemp("geo") / "scene.tif")


# ------------------------------------------------------------------------------------------ reading and bands
def test_windowed_reads_equal_the_whole_array_and_the_in_memory_reader(geotiff):
    with pytest.raises(BandSelectionError, match="scene.tif.*4 band.*--bands"):
        RasterSource(geotiff)  # 4 grey/undefined bands: no silent choice
    with RasterSource(geotiff, bands=(3, 2, 1)) as src:
        assert (src.width, src.height) == (W, H)
        whole, valid = src.read_with_mask((0, 0, W, H))
        # The in-memory (tifffile) reader of the dataset tools gives exactly the same pixels.
        np.testing.assert_array_equal(whole, read_image_rgb(geotiff, bands=(3, 2, 1)))
        assert not valid[:10].any() and not valid[:, :10].any() and valid[10:, 10:].all()
        assert (whole[:10] == 0).all()
        for win in tile_windows(W, H, 64, 16):
            x0, y0, x1, y1 = win
            part, pvalid = src.read_with_mask(win)
            np.testing.assert_array_equal(part, whole[y0:y1, x0:x1])
            if x1 <= 10 or y1 <= 10:
                assert pvalid is not None and not pvalid.any()  # a fully masked tile (skipped by the runner)


def test_bands_pick_the_right_bands_and_scaling_is_per_raster(geotiff):
    data = _bands()
    with RasterSource(geotiff, bands=(4, 1, 2), scaling="full") as src:
        rgb = src.read((50, 50, 90, 80))
    expected = np.rint(data[[3, 0, 1], 50:80, 50:90].transpose(1, 2, 0) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb, expected)
    with RasterSource(geotiff, bands=(2,)) as src:  # one band: grey
        grey = src.read((20, 20, 40, 40))
        lo, hi = src.scaling.low[0], src.scaling.high[0]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert 1300 <= lo < hi <= 2200  # band 2's 2-98 % range, the nodata border left out


def test_rgb_colour_interpretation_is_the_default(tmp_path):
    data = _bands()[:3]
    path = write_geotiff(tmp_path / "rgb.tif", data, photometric="RGB")
    with RasterSource(path) as src:
        assert src.band_choice.indexes == (1, 2, 3) and src.band_choice.reason == "colour interpretation"


def test_cog_and_vrt_mosaic_read_like_the_geotiff(geotiff, tmp_path):
    with RasterSource(geotiff, bands=(1, 2, 3)) as src:
        ref = src.read((0, 0, W, H))
    cog = tmp_path / "scene_cog.tif"
    with rasterio.open(geotiff) as ds:
        profile = dict(ds.profile, driver="COG")
        for key in ("blockxsize", "blockysize", "tiled", "interleave", "photometric"):
            profile.pop(key, None)
        with rasterio.open(cog, "w", **profile) as out:
            out.write(ds.read())
    with RasterSource(cog, bands=(1, 2, 3)) as src:
        np.testing.assert_array_equal(src.read((0, 0, W, H)), ref)
    # Two halves of the scene written as separate GeoTIFFs, mosaicked by a VRT: one scene again.
    data = _bands()
    left, right = 150, W - 150
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    write_geotiff(tiles / "a.tif", data[:, :, :left], tiled=False)
    t = from_origin(ORIGIN[0] + left * GSD, ORIGIN[1], GSD, GSD)
    write_geotiff(tiles / "b.tif", np.ascontiguousarray(data[:, :, left:]), transform=t, tiled=False)
    vrt = build_vrt(sorted(tiles.glob("*.tif")), tmp_path / "mosaic.vrt")
    with RasterSource(vrt, bands=(1, 2, 3)) as src:
        assert (src.width, src.height) == (W, H) and right == W - left
        assert src.georef.transform == pytest.approx(tuple(from_origin(*ORIGIN, GSD, GSD))[:6])
        np.testing.assert_array_equal(src.read((0, 0, W, H)), ref)
    with pytest.raises(ValueError, match="b.tif: CRS"):
        write_geotiff(tiles / "b.tif", np.ascontiguousarray(data[:, :, left:]), transform=t, crs="EPSG:32632")
        build_vrt(sorted(tiles.glob("*.tif")), tmp_path / "bad.vrt")


# ----------------------------------------------------------------------------------------------- GSD, resampling
def test_gsd_and_target_gsd_resampling(geotiff):
    with RasterSource(geotiff, bands=(1, 2, 3)) as src:
        assert src.georef.gsd() == pytest.approx((GSD, GSD))
        full = src.read((0, 0, W, H)).astype(np.float64)
    with RasterSource(geotiff, bands=(1, 2, 3), target_gsd=1.0) as src:
        assert src.factor == pytest.approx(0.5)
        assert (src.width, src.height) == (round(W / 2), round(H / 2))
        half = src.read((0, 0, src.width, src.height)).astype(np.float64)
        np.testing.assert_allclose(src.to_raster_pixels(np.array([[10, 20, 30, 40]])), [[20, 40, 60, 80]])
        assert src.frame_georef.gsd() == pytest.approx((1.0, 1.0))
    # GDAL's average of 2x2 blocks, compared away from the nodata edge.
    block = full[20 : 20 + 200, 20 : 20 + 280].reshape(100, 2, 140, 2, 3).mean(axis=(1, 3))
    assert np.abs(half[10:110, 10:150] - block).mean() < 1.0
    with RasterSource(geotiff, bands=(1, 2, 3), target_gsd=0.25) as src:
        assert (src.width, src.height) == (2 * W, 2 * H)


def test_geographic_gsd_is_in_metres():
    g = Georef((1e-5, 0, 10.0, 0, -1e-5, 60.0), "WKT", "EPSG:4326", is_geographic=True, width=10, height=10)
    gx, gy = g.gsd()
    assert gx == pytest.approx(0.5580, rel=2e-3) and gy == pytest.approx(1.1140, rel=2e-3)  # at 60 deg N


# --------------------------------------------------------------------------------------------- pixel -> map
def test_box_rings_follow_the_affine_transform_incl_rotation():
    g = Georef(tuple(from_origin(1000, 2000, 2, 2))[:6], None, "local")
    rings = g.box_rings(np.array([[10, 20, 30, 25]]))
    assert rings.shape == (1, 5, 2) and (rings[0, 0] == rings[0, -1]).all()
    assert {tuple(p) for p in rings[0]} == {(1020, 1960), (1060, 1960), (1060, 1950), (1020, 1950)}
    rot = Affine.translation(1000, 2000) @ Affine.rotation(30) @ Affine.scale(2, -2)
    gr = Georef(tuple(rot)[:6], None, "local")
    ring = gr.box_rings(np.array([[10, 20, 30, 25]]))[0]
    expected = {tuple(np.round(rot @ (c, r), 6)) for c, r in [(10, 20), (30, 20), (30, 25), (10, 25)]}
    assert {tuple(np.round(p, 6)) for p in ring} == expected
    side = np.linalg.norm(ring[1] - ring[0]), np.linalg.norm(ring[2] - ring[1])
    assert sorted(side) == pytest.approx([10.0, 40.0])  # a rotated rectangle, sides kept


def test_pixel_is_point_rasters_map_pixel_corners(tmp_path):
    path = tmp_path / "point.tif"
    write_geotiff(path, _bands()[:, :40, :40], tiled=False)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(AREA_OR_POINT="Point")
    with rasterio.Env(GTIFF_POINT_GEO_IGNORE=True):  # the raw tie point: the centre of pixel (0, 0)
        with rasterio.open(path) as ds:
            raw = ds.transform
    with RasterSource(path, bands=(1,)) as src:
        corner = src.georef.pixel_to_map(np.array(0.0), np.array(0.0))
        centre = src.georef.pixel_to_map(np.array(0.5), np.array(0.5))
    assert (raw.c, raw.f) != pytest.approx((float(corner[0]), float(corner[1])))
    assert (float(centre[0]), float(centre[1])) == pytest.approx((raw.c, raw.f))


# ------------------------------------------------------------------------------------------------- writers
def _rings_of(feature):
    assert feature["geometry"]["type"] == "Polygon"
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    return ring


def test_geojson_is_rfc7946_and_lands_on_the_map_coordinates(geotiff, tmp_path):
    from pyogrio import read_info

    with RasterSource(geotiff, bands=(1, 2, 3)) as src:
        georef = src.georef
    boxes = np.array([[200, 200, 210, 230], [50.5, 60.25, 80, 90], [200, 180, 230, 200]], np.float32)
    table = detection_table(
        "scene.tif", boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 2, 1]), ["car", "ship", "tank"]
    )
    out = tmp_path / "scene.geojson"
    assert write_geojson(out, georef, boxes, table) == 3
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    for feature in doc["features"]:
        ring = _rings_of(feature)
        assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()  # closed
        x, y = ring[:, 0], ring[:, 1]
        assert (
            0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0
        )  # counter-clockwise (RFC 7946 right-hand rule)
        assert (np.abs(x - 15) < 0.01).all() and (np.abs(y) < 0.01).all()  # lon/lat order, near (15 E, 0 N)
    first = doc["features"][0]
    assert first["properties"]["class_name"] == "car" and first["properties"]["px_x1"] == 200
    # Pixel (200, 200) is (500000 m E, 0 m N) in UTM 33N: exactly longitude 15, latitude 0.
    corners = {tuple(p) for p in _rings_of(first)}
    assert (15.0, 0.0) in corners
    assert read_info(out)["crs"] == "EPSG:4326" and read_info(out)["features"] == 3
    # Web Mercator: the inverse projection is analytic, an independent check of the reprojection.
    g3857 = Georef((10.0, 0, 1.0e6, 0, -10.0, 2.0e6), rasterio.crs.CRS.from_epsg(3857).to_wkt(), "EPSG:3857")
    write_geojson(
        tmp_path / "m.geojson", g3857, boxes[:1], detection_table("m", boxes[:1], [1.0], [0], ["car"])
    )
    ring = _rings_of(json.loads((tmp_path / "m.geojson").read_text())["features"][0])
    r = 6378137.0
    for col, row in [(200, 200), (210, 230)]:
        mx, my = 1.0e6 + 10 * col, 2.0e6 - 10 * row
        lon = math.degrees(mx / r)
        lat = math.degrees(2 * math.atan(math.exp(my / r)) - math.pi / 2)
        assert np.min(np.abs(ring - [lon, lat]).sum(axis=1)) < 1e-6


def test_geopackage_keeps_the_raster_crs_and_attributes(geotiff, tmp_path):
    from pyogrio import read_info
    from pyogrio.raw import read

    with RasterSource(geotiff, bands=(1, 2, 3)) as src:
        georef = src.georef
    boxes = np.array([[200, 200, 210, 230], [50, 60, 80, 90]], np.float32)
    table = detection_table(
        "scene.tif", boxes, np.array([0.9, 0.8]), np.array([1, 0]), ["car", "ship"], [5, 7]
    )
    out = tmp_path / "scene.gpkg"
    assert write_gpkg(out, georef, boxes, table) == 2
    info = read_info(out)
    assert info["crs"] == UTM33 and info["geometry_type"] == "Polygon" and info["features"] == 2
    _, _, geometry, fields = read(out)
    names = list(read_info(out)["fields"])
    assert list(fields[names.index("class_name")]) == ["ship", "car"]
    assert list(fields[names.index("category_id")]) == [7, 5]
    # WKB polygon of the first box: its map corners exactly.
    coords = np.frombuffer(geometry[0][13:], dtype="<f8").reshape(-1, 2)
    np.testing.assert_allclose(coords, georef.box_rings(boxes[:1])[0])
    assert {tuple(p) for p in coords} >= {(500000.0, 0.0), (500005.0, -15.0)}
    assert (
        write_gpkg(
            tmp_path / "empty.gpkg",
            georef,
            np.zeros((0, 4)),
            detection_table("e", np.zeros((0, 4)), [], [], ["car"]),
        )
        == 0
    )
