"""PSNR/SSIM of the SR output (framework-free): the separable SSIM equals the 2-D-window definition."""

import math

import pytest
import torch
import torch.nn.functional as F

from sdconet.evaluation.sr_quality import (
    DATA_RANGE,
    SSIM_K1,
    SSIM_K2,
    SSIM_WINDOW,
    gaussian_window_1d,
    psnr,
    ssim,
)


def _ssim_2d_window(a, b):
    """Wang et al.'s SSIM written directly with the 11x11 2-D Gaussian window (the reference)."""
    g = gaussian_window_1d()
    win = (g[:, None] * g[None, :])[None, None]
    x, y = a.double()[:, None], b.double()[:, None]
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    var_x, var_y = F.conv2d(x * x, win) - mu_x**2, F.conv2d(y * y, win) - mu_y**2
    cov = F.conv2d(x * y, win) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    return float((((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))).mean())


@pytest.mark.parametrize("shape", [(3, 64, 48), (1, 11, 30), (3, 97, 131)])
def test_separable_ssim_equals_the_2d_window(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    a = torch.randint(0, 256, shape, generator=gen).float()
    b = (a + 25 * torch.randn(shape, generator=gen)).round().clamp(0, 255)
    assert ssim(a, b) == pytest.approx(_ssim_2d_window(a, b), rel=1e-12, abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)


def test_psnr_and_ssim_closed_forms_and_errors():
    flat = torch.full((3, 16, 16), 100.0)
    assert psnr(flat, flat) == math.inf
    assert psnr(flat, flat + 10) == pytest.approx(10 * math.log10(255**2 / 100))
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    assert ssim(flat, flat + 10) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), rel=1e-9)
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim(flat[:, : SSIM_WINDOW - 1], flat[:, : SSIM_WINDOW - 1])
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(flat, flat[:, :12])
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(flat, flat[:1])
