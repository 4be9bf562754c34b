"""The one HR -> LR degradation (bicubic x1/scale, no antialiasing by default)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdconet.data.degradation import degrade, degrade_tensor, lr_size


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("h, w, scale", [(64, 64, 2), (65, 63, 2), (10, 11, 3), (8, 9, 4), (5, 5, 1)])
def test_lr_size_is_floor(h, w, scale):
    lr = degrade(_image(h, w), scale)
    assert lr.shape == (h // scale, w // scale, 3) == lr_size(h, w, scale) + (3,)
    assert lr.dtype == np.uint8


def test_matches_the_official_interpolate_without_antialias():
    hr = _image(48, 40, seed=1)
    x = torch.from_numpy(hr).permute(2, 0, 1)[None].float()
    ref = F.interpolate(x, scale_factor=0.5, mode="bicubic", align_corners=False)
    ref = ref.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(degrade(hr, 2), ref)


def test_antialias_option_changes_the_result():
    hr = _image(32, 32, seed=2)
    assert not np.array_equal(degrade(hr, 2, antialias=True), degrade(hr, 2))


def test_constant_image_stays_constant_and_pixel_grid_is_aligned():
    hr = np.full((20, 30, 3), 77, dtype=np.uint8)
    assert (degrade(hr, 2) == 77).all()
    # a bright 2x2 block at HR (8..10, 12..14) lands on LR pixel (4, 6): LR pixel i covers HR [2i, 2i+2)
    hr = np.zeros((20, 30, 3), dtype=np.uint8)
    hr[8:10, 12:14] = 200
    lr = degrade(hr, 2)[..., 0].astype(int)
    assert np.unravel_index(lr.argmax(), lr.shape) == (4, 6)


def test_tensor_variant_gives_the_same_numbers_and_keeps_batches():
    hr = _image(30, 26, seed=3)
    chw = torch.from_numpy(hr).permute(2, 0, 1)
    out = degrade_tensor(chw, 2)
    assert out.dtype == torch.uint8 and out.shape == (3, 15, 13)
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), degrade(hr, 2))
    batch = degrade_tensor(torch.stack([chw, chw]), 2)
    assert batch.shape == (2, 3, 15, 13) and torch.equal(batch[1], out)


def test_float_input_is_linear_so_normalisation_commutes():
    hr = torch.rand(1, 3, 16, 16) * 255
    mean = torch.tensor([123.7, 116.3, 103.5]).view(1, 3, 1, 1)
    std = torch.tensor([58.4, 57.1, 57.4]).view(1, 3, 1, 1)
    a = degrade_tensor((hr - mean) / std, 2)
    b = (degrade_tensor(hr, 2) - mean) / std
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert a.dtype == torch.float32


@pytest.mark.parametrize("scale", [0, -2, 1.5, True])
def test_bad_scale_is_refused(scale):
    with pytest.raises(ValueError):
        degrade(_image(8, 8), scale)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        degrade(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError):
        degrade(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        degrade(_image(1, 8), 2)
