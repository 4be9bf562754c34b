"""read_image_rgb: grey/RGBA/16-bit/float rasters become 8-bit RGB; bad files raise ImageReadError."""

import cv2
import numpy as np
import pytest
from PIL import Image

from sdconet.data.errors import ImageReadError
from sdconet.data.image_io import read_image_rgb, read_image_size, write_image


def test_rgb_jpeg_and_png_roundtrip(tmp_path):
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "a.png"), rgb)
    assert read_image_size(tmp_path / "a.png") == (5, 6)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=100)
    out = read_image_rgb(tmp_path / "a.jpg")
    assert out.shape == (6, 5, 3) and out[..., 0].min() > 190 and out[..., 1:].max() < 15


def test_grayscale_is_replicated(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image_rgb(tmp_path / "g.png")
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 0  # fully transparent: the colour is still returned
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image_rgb(tmp_path / "a.png")
    assert out.shape == (4, 4, 3) and (out == (10, 20, 30)).all()


def test_16bit_gray_full_range_scaling(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    out = read_image_rgb(tmp_path / "g16.png", scaling="full")
    assert out[..., 0].tolist() == [[0, 1, 128, 255]]


def test_16bit_rgb_keeps_channel_order(tmp_path):
    rgb16 = np.zeros((2, 2, 3), dtype=np.uint16)
    rgb16[..., 0] = 65535  # red in RGB order
    cv2.imwrite(str(tmp_path / "c16.tif"), rgb16[..., ::-1])  # OpenCV writes BGR
    out = read_image_rgb(tmp_path / "c16.tif", scaling="full")
    assert (out[..., 0] == 255).all() and (out[..., 1:] == 0).all()


def test_16bit_percentile_stretch(tmp_path):
    dark = np.arange(100, dtype=np.uint16).reshape(10, 10) * 40  # 12-bit-like data, max 3960
    cv2.imwrite(str(tmp_path / "d.png"), dark)
    full = read_image_rgb(tmp_path / "d.png", scaling="full")
    stretched = read_image_rgb(tmp_path / "d.png")  # the default
    assert full.max() <= 16
    assert stretched.min() == 0 and stretched.max() == 255


def test_float_reflectance_is_scaled(tmp_path):
    refl = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    cv2.imwrite(str(tmp_path / "f.tif"), refl)
    assert read_image_rgb(tmp_path / "f.tif", scaling="full")[..., 0].tolist() == [[0, 128, 255]]


def test_truncated_jpeg_raises_naming_the_path(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image_rgb(bad)
    assert str(bad) in str(info.value) and info.value.path == str(bad)


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_garbage_and_empty_files_raise(tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image_rgb(bad)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageReadError, match="nope.jpg"):
        read_image_rgb(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="nope.jpg"):
        read_image_size(tmp_path / "nope.jpg")
