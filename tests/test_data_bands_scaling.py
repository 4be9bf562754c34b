"""The one band rule and the one 16-bit/float scaling function (shared by the dataset tools and inference).

Regression tests for multi-band TIFFs: before the band rule, a 5- or 6-band 8-bit RGB TIFF was silently read as
bands 1-3 and a 16-bit 6-band TIFF failed with an unreadable ``<_io.BytesIO ...>`` message.
"""

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

from sdconet.data.bands import BandSelectionError, choose_bands, parse_bands  # noqa: E402
from sdconet.data.image_io import read_image_rgb, read_image_size  # noqa: E402
from sdconet.data.scaling import (  # noqa: E402
    STATS_FULL_PIXELS,
    compute_scaling,
    scale_array,
    scaling_for_array,
    stats_windows,
)

RNG = np.random.default_rng(0)
BANDS6 = RNG.integers(0, 256, (20, 30, 6), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------- band rule
def test_choose_bands_rule():
    assert choose_bands(3, ["red", "green", "blue"]).indexes == (1, 2, 3)
    assert choose_bands(4, ["blue", "green", "red", "undefined"]).indexes == (3, 2, 1)
    assert choose_bands(4, ["red", "green", "blue", "alpha"]).indexes == (1, 2, 3)
    assert choose_bands(1, ["gray"]).indexes == (1, 1, 1)
    assert choose_bands(2, ["gray", "alpha"]).indexes == (1, 1, 1)
    assert choose_bands(1, ["palette"]).palette
    assert choose_bands(6, ["undefined"] * 6, bands=(6, 5, 4)).indexes == (6, 5, 4)
    assert choose_bands(6, ["undefined"] * 6, bands=(2,)).indexes == (2, 2, 2)
    with pytest.raises(BandSelectionError, match=r"scene\.tif.*more than 4 bands.*--bands"):
        choose_bands(5, ["red", "green", "blue", "undefined", "undefined"], source="scene.tif")
    with pytest.raises(BandSelectionError, match=r"no RGB colour interpretation.*--bands 1,2,3"):
        choose_bands(4, ["gray", "undefined", "undefined", "undefined"], source="ms.tif")
    with pytest.raises(BandSelectionError, match=r"--bands 7,1,2: the file has 6 band"):
        choose_bands(6, [], bands=(7, 1, 2), source="x.tif")


def test_parse_bands_names_the_flag():
    assert parse_bands("3,2,1") == (3, 2, 1)
    assert parse_bands("4") == (4,)
    assert parse_bands(None) is None
    for bad in ("1,2", "0,1,2", "a,b,c"):
        with pytest.raises(ValueError, match="--bands"):
            parse_bands(bad)


@pytest.mark.parametrize("count", [5, 6])
def test_many_band_8bit_rgb_tiff_is_refused_not_silently_cut(tmp_path, count):
    # photometric RGB + extra samples: the old reader returned bands 1-3 without a word.
    path = tmp_path / f"rgb{count}.tif"
    tifffile.imwrite(path, BANDS6[..., :count], photometric="rgb", planarconfig="contig")
    with pytest.raises(BandSelectionError) as info:
        read_image_rgb(path)
    assert str(path) in str(info.value) and "--bands" in str(info.value)
    np.testing.assert_array_equal(read_image_rgb(path, bands=(1, 2, 3)), BANDS6[..., :3])


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_16bit_6band_tiff_reads_the_chosen_bands(tmp_path, planar):
    data = BANDS6.astype(np.uint16) * 257  # full-range 16-bit copy of the 8-bit values
    path = tmp_path / "ms16.tif"
    stored = data if planar == "contig" else np.moveaxis(data, -1, 0)
    tifffile.imwrite(path, stored, photometric="minisblack", planarconfig=planar)
    assert read_image_size(path) == (30, 20)
    with pytest.raises(BandSelectionError, match="ms16.tif.*6 band"):
        read_image_rgb(path)
    out = read_image_rgb(path, scaling="full", bands=(6, 4, 2))
    np.testing.assert_array_equal(out, BANDS6[..., [5, 3, 1]])
    grey = read_image_rgb(path, scaling="full", bands=(5,))
    np.testing.assert_array_equal(grey, np.repeat(BANDS6[..., 4:5], 3, axis=2))


def test_rgb_png_band_reorder(tmp_path):
    from sdconet.data.image_io import write_image

    write_image(tmp_path / "a.png", BANDS6[..., :3])
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "a.png", bands=(3, 2, 1)), BANDS6[..., 2::-1])


def test_tiff_nodata_is_left_out_of_the_statistics_and_zeroed(tmp_path):
    data = np.full((40, 50, 3), 1000, np.uint16)
    data[:, :25] = 3000
    data[:5] = 0  # nodata border
    path = tmp_path / "nd.tif"
    tifffile.imwrite(path, data, photometric="rgb", extratags=[(42113, "s", 0, "0", True)])
    out = read_image_rgb(path)  # percentile: the 0 border must not stretch the range
    assert (out[:5] == 0).all()
    assert (out[5:, :25] == 255).all() and (out[5:, 25:] == 0).all()


# --------------------------------------------------------------------------------------------------- scaling
def test_percentile_is_per_band_and_full_is_v_over_257():
    img = np.zeros((10, 10, 2), np.uint16)
    img[..., 0] = np.arange(100).reshape(10, 10) * 40  # 12-bit-like
    img[..., 1] = np.arange(100).reshape(10, 10) * 600
    out = scale_array(img, "percentile")
    for c in range(2):
        assert out[..., c].min() == 0 and out[..., c].max() == 255
    full = scale_array(img, "full")
    np.testing.assert_array_equal(full, np.rint(img / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(scale_array(img, "none"), np.clip(img, 0, 255).astype(np.uint8))


def test_8bit_is_never_rescaled_and_constant_bands_stay_visible():
    img = RNG.integers(50, 60, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(scale_array(img, "percentile"), img)
    const = np.full((4, 4, 1), 65535, np.uint16)
    assert (scale_array(const, "percentile") == 255).all()


def test_float_scaling_and_non_finite_values():
    refl = np.array([[[0.0], [0.5], [1.0], [np.nan]]], dtype=np.float32)
    out = scale_array(refl, "full")
    assert out[..., 0].tolist() == [[0, 128, 255, 0]]


def test_statistics_come_from_fixed_windows_for_large_rasters():
    side = int(np.sqrt(STATS_FULL_PIXELS)) + 64
    windows = stats_windows(side, side)
    assert len(windows) == 256 and all(x1 <= side and y1 <= side for _, _, x1, y1 in windows)
    assert stats_windows(100, 50) == [(0, 0, 100, 50)]
    # The scaling of a large raster equals the scaling computed from its windows only.
    img = np.zeros((side, side, 1), np.uint16)
    for x0, y0, x1, y1 in windows:
        img[y0:y1, x0:x1] = RNG.integers(1000, 2000, (y1 - y0, x1 - x0, 1))
    img[0, 0] = 60000  # outside... or inside the sample: either way the result is the windows' statistics
    direct = compute_scaling(
        [(img[y0:y1, x0:x1], None) for x0, y0, x1, y1 in windows], "percentile", img.dtype
    )
    assert scaling_for_array(img, "percentile") == direct
    assert 1000 <= direct.low[0] < direct.high[0] <= 2000


# ------------------------------------------------------------------------------------------- dataset tools
def test_dataset_tools_apply_the_same_band_rule_and_scaling(tmp_path):
    from sdconet.data.cli import add_tiling_arguments, new_parser, options_from_args
    from sdconet.data.prepare import TilingOptions, prepare_split_dataset
    from sdconet.data.records import SourceDataset, SourceImage, SourceObject

    data = (RNG.integers(0, 4096, (48, 48, 6))).astype(np.uint16)
    path = tmp_path / "ms.tif"
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig")
    ds = SourceDataset("ms", ("car",), [SourceImage("ms", str(path), [SourceObject((4, 4, 20, 20), 0)])])
    args = new_parser(None)
    add_tiling_arguments(args, "nwpu")
    parsed = args.parse_args(["--out", str(tmp_path / "o"), "--bands", "3,2,1"])
    assert options_from_args(parsed).bands == (3, 2, 1) and options_from_args(parsed).scaling == "percentile"

    # No usable source: the dataset guard stops the run and says why (the band rule's --bands) ...
    from sdconet.data.errors import DatasetGuardError

    with pytest.raises(DatasetGuardError, match="--bands"):
        prepare_split_dataset(ds, tmp_path / "a", {"train": ["ms"]}, TilingOptions(64, 16), progress=False)
    # ... and with --force the image is reported, skipped and counted like any unreadable one.
    refused = prepare_split_dataset(
        ds, tmp_path / "a", {"train": ["ms"]}, TilingOptions(64, 16), progress=False, force=True
    )
    assert len(refused.failed) == 1 and "--bands" in refused.failed[0][1]

    opts = TilingOptions(64, 16, bands=(3, 2, 1))
    done = prepare_split_dataset(ds, tmp_path / "b", {"train": ["ms"]}, opts, progress=False)
    assert not done.failed
    tile = read_image_rgb(next((tmp_path / "b").rglob("*.png")))
    expected = read_image_rgb(path, bands=(3, 2, 1))
    np.testing.assert_array_equal(tile[:48, :48], expected)
