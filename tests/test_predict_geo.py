"""tools/predict.py on georeferenced rasters, end to end on CPU with a tiny model made here.

Synthetic uint16 4-band GeoTIFFs in UTM zone 33N with a nodata border, sizes not a multiple of the tile: windowed
reading equals reading the whole array; GeoJSON/GeoPackage land on the map coordinates of the pixel boxes; --bands is
required and picks the bands; --geo on a PNG is a clear error; --target-gsd; 2 processes over gloo equal 1 process.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")

from rasterio.transform import from_origin  # noqa: E402

from sdconet.data.image_io import write_image  # noqa: E402
from sdconet.inference.synthetic_scene import make_synthetic_scene  # noqa: E402
from sdconet.modeling.build import build_sdconet  # noqa: E402
from sdconet.modeling.config import SDCoNetConfig  # noqa: E402

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "projects" / "SDCoNet" / "configs" / "quick_synthetic.yaml"
GSD = 0.5
ORIGIN = (400000.0, 5000000.0)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_scene(path, width, height, seed, border, origin=ORIGIN):
    """Blue, green, red, NIR uint16 (12-bit values), no colour interpretation, nodata 0 on the top rows."""
    rgb = make_synthetic_scene(width, height, seed=seed).image.astype(np.uint16)
    data = np.stack([rgb[..., 2], rgb[..., 1], rgb[..., 0], rgb[..., 1]]) * 16 + 64
    data[:, :border] = 0
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": from_origin(*origin, GSD, GSD),
        "nodata": 0,
        "photometric": "MINISBLACK",
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("geo_predict")
    torch.manual_seed(0)
    model = build_sdconet(SDCoNetConfig.tiny(num_classes=3))
    ckpt = root / "model_final.pth"
    torch.save({"model": {f"core.{k}": v for k, v in model.state_dict().items()}, "iteration": 1}, ckpt)
    scenes = root / "scenes"
    scenes.mkdir()
    a = write_scene(scenes / "a.tif", 333, 277, seed=1, border=140)  # the first tile row is nodata only
    b = write_scene(scenes / "b.tif", 200, 150, seed=2, border=10)
    return {"root": root, "ckpt": ckpt, "a": a, "b": b}


def predict(env, out, *args):
    argv = ["--config-file", str(QUICK), "--weights", str(env["ckpt"]), "--output", str(env["root"] / out)]
    argv += ["--score-thresh", "0.0", "--max-dets", "150", "--quiet", "--overwrite", *map(str, args)]
    return load_tool("predict").main(argv)


def read(env, out, name):
    return json.loads((env["root"] / out / name).read_text())


@pytest.fixture(scope="module")
def reference(env):
    """One process, windowed (rasterio) reading, --geo, one tile per forward pass."""
    code = predict(
        env, "ref", "--input", env["a"], env["b"], "--bands", "3,2,1", "--geo", "--batch-size", "1"
    )
    assert code == 0
    return env["root"] / "ref"


def test_geo_outputs_land_on_the_map_coordinates(env, reference):
    from pyogrio import read_info
    from rasterio.warp import transform as warp

    summary = read(env, "ref", "summary.json")
    assert summary["images_done"] == 2 and summary["geo_files"] == 4
    assert summary["tiles_skipped_nodata"] >= 4  # the nodata border's tile row is not predicted
    assert summary["tiles_per_second"] > 0 and summary["megapixels_per_second"] > 0
    images = {Path(i["file_name"]).name: i for i in read(env, "ref", "images.json")["images"]}
    assert (images["a.tif"]["width"], images["a.tif"]["height"]) == (333, 277)
    assert images["a.tif"]["georef"]["crs"] == "EPSG:32633"
    assert images["a.tif"]["georef"]["gsd_m"] == [GSD, GSD]
    results = [r for r in read(env, "ref", "results.json") if r["image_id"] == images["a.tif"]["id"]]
    doc = json.loads((reference / "geo" / "a.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert len(doc["features"]) == len(results) > 0
    for feature in doc["features"]:
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert (
            feature["geometry"]["type"] == "Polygon" and ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
        )
        x, y = ring[:, 0], ring[:, 1]
        assert 0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0  # counter-clockwise
    # A known corner: the top-left pixel corner of each box, through the affine transform, then to WGS84.
    for feature in doc["features"][:20]:
        p = feature["properties"]
        easting, northing = ORIGIN[0] + GSD * p["px_x1"], ORIGIN[1] - GSD * p["px_y1"]
        lon, lat = warp("EPSG:32633", "EPSG:4326", [easting], [northing])
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert np.abs(ring - [lon[0], lat[0]]).sum(axis=1).min() < 2e-7
    # Rows 0-63 are seen only by the skipped (all-nodata) tile row: no box lies there.
    assert min(f["properties"]["px_y2"] for f in doc["features"]) > 64
    info = read_info(reference / "geo" / "a.gpkg")
    assert info["crs"] == "EPSG:32633" and info["features"] == len(results)
    assert read_info(reference / "geo" / "a.geojson")["crs"] == "EPSG:4326"
    # COCO results hold the same pixel boxes as the GIS attributes.
    coco = sorted((round(r["bbox"][0], 2), round(r["bbox"][1], 2)) for r in results)
    gis = sorted(
        (round(f["properties"]["px_x1"], 2), round(f["properties"]["px_y1"], 2)) for f in doc["features"]
    )
    assert coco == gis


def test_windowed_reading_equals_the_whole_array(env, reference):
    # --reader image: the dataset tools' reader, the whole raster in memory (same band rule, scaling, nodata).
    code = predict(env, "whole", "--input", env["a"], env["b"], "--bands", "3,2,1", "--reader", "image")
    assert code == 0
    assert read(env, "whole", "results.json") == read(env, "ref", "results.json")
    assert (
        read(env, "whole", "summary.json")["tiles_skipped_nodata"]
        == read(env, "ref", "summary.json")["tiles_skipped_nodata"]
    )


def test_bands_are_required_and_geo_needs_georeferencing(env, capsys):
    assert predict(env, "nobands", "--input", env["a"]) == 4  # nothing could be done
    err = capsys.readouterr().err
    assert "a.tif" in err and "--bands" in err and "4 band(s)" in err
    png = env["root"] / "plain.png"
    write_image(png, np.zeros((40, 50, 3), np.uint8))
    assert predict(env, "png", "--input", png, "--geo") == 2
    err = capsys.readouterr().err
    assert "--geo" in err and "plain.png" in err and "georeferenc" in err
    assert not (env["root"] / "png" / "results.json").exists()


def test_target_gsd_resamples_and_reports_file_pixels(env, reference):
    assert predict(env, "gsd1", "--input", env["a"], "--bands", "3,2,1", "--target-gsd", "1.0") == 0
    summary = read(env, "gsd1", "summary.json")
    images = read(env, "gsd1", "images.json")["images"]
    assert (images[0]["width"], images[0]["height"]) == (
        333,
        277,
    )  # the file's pixels, not the resampled frame
    assert summary["tiles"] < read(env, "ref", "summary.json")["tiles"]
    boxes = np.array([r["bbox"] for r in read(env, "gsd1", "results.json")])
    assert (
        len(boxes) and boxes[:, 0].max() <= 333 and (boxes[:, 0] + boxes[:, 2]).max() > 200
    )  # spans the file


@pytest.mark.parametrize("shard", ["tiles", "scenes"])
def test_two_processes_equal_one_process(env, reference, shard):
    out = f"dist_{shard}"
    args = ["--input", env["a"], env["b"], "--bands", "3,2,1", "--geo", "--batch-size", "1"]
    assert predict(env, out, *args, "--num-gpus", "2", "--shard", shard, "--no-vis") == 0
    summary = read(env, out, "summary.json")
    assert summary["processes"] == 2 and summary["shard"] == shard
    assert read(env, out, "results.json") == read(env, "ref", "results.json")
    assert read(env, out, "images.json") == read(env, "ref", "images.json")
    for name in ("a.geojson", "b.geojson"):
        assert (env["root"] / out / "geo" / name).read_bytes() == (reference / "geo" / name).read_bytes()
    ranks = sorted(p.name for p in (env["root"] / out / "parts").glob("rank*.jsonl"))
    assert ranks == ["rank0.jsonl", "rank1.jsonl"]  # each process wrote its own raw tile detections
    raw = [
        json.loads(line) for line in (env["root"] / out / "parts" / "rank1.jsonl").read_text().splitlines()
    ]
    assert raw and all(r["type"] == "raw" for r in raw)


def test_plot_geo_draws_detections_with_map_axes(env, reference):
    out = env["root"] / "geo_picture.png"
    argv = ["--raster", str(env["a"]), "--bands", "3,2,1", "--detections", str(reference / "geo" / "a.gpkg")]
    argv += [
        "--score-thresh",
        "0.0",
        "--window",
        "100",
        "150",
        "200",
        "250",
        "--dpi",
        "40",
        "--out",
        str(out),
    ]
    assert load_tool("plot_geo").main(argv) == 0
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > im.size[1] > 100  # two panels side by side
    png = env["root"] / "plain_for_plot.png"
    write_image(png, np.zeros((20, 20, 3), np.uint8))
    assert (
        load_tool("plot_geo").main(
            ["--raster", str(png), "--detections", str(reference / "geo" / "a.gpkg"), "--out", str(out)]
        )
        == 2
    )


def test_a_folder_of_tiles_is_one_scene_with_mosaic(env):
    tiles = env["root"] / "tiles"
    tiles.mkdir()
    write_scene(tiles / "west.tif", 150, 140, seed=3, border=0)
    write_scene(tiles / "east.tif", 130, 140, seed=4, border=0, origin=(ORIGIN[0] + 150 * GSD, ORIGIN[1]))
    assert predict(env, "mosaic", "--input", tiles, "--mosaic", "--bands", "3,2,1", "--geo", "--no-vis") == 0
    images = read(env, "mosaic", "images.json")["images"]
    assert len(images) == 1 and (images[0]["width"], images[0]["height"]) == (280, 140)
    assert images[0]["file_name"].endswith("tiles.vrt") and images[0]["georef"]["transform"][2] == ORIGIN[0]
    assert (env["root"] / "mosaic" / "geo" / "tiles.geojson").is_file()
