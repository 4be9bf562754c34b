"""Image-quality metrics of the SR output: PSNR and SSIM on the 8-bit scale (framework-free).

SSIM follows Wang et al. 2004 (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, 'valid' region, mean over the
channels), the definition of ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
use_sample_covariance=False)``. The 2-D Gaussian window is the outer product of a 1-D one, so the local means are
computed with two 1-D convolutions (22 instead of 121 multiply-adds per pixel) on the five maps x, y, x², y², xy at
once: the same numbers as the 2-D window up to float64 rounding, about 5x faster on a 512² CPU image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["DATA_RANGE", "SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "gaussian_window_1d", "psnr", "ssim"]

#: 8-bit peak value.
DATA_RANGE = 255.0
#: SSIM constants and Gaussian window of Wang et al. 2004 (window 11, sigma 1.5, K1 0.01, K2 0.03).
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images of the same shape on the 0-255 scale, e.g. (3, H, W) (``inf`` when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = F.mse_loss(a.double(), b.double()).item()
    return math.inf if mse == 0 else 10.0 * math.log10(DATA_RANGE**2 / mse)


def gaussian_window_1d(device: torch.device | None = None) -> torch.Tensor:
    """(SSIM_WINDOW,) float64 normalised Gaussian; its outer product with itself is SSIM's 2-D window."""
    g = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(g**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of two (C, H, W) images on the 0-255 scale (per channel, Gaussian window, 'valid' region).

    Raises:
        ValueError: shapes differ, or a side is shorter than the window (11 px).
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW} px per side, got {tuple(a.shape[-2:])}")
    x, y = a.double(), b.double()
    maps = torch.stack([x, y, x * x, y * y, x * y])  # (5, C, H, W)
    five, c, h, w = maps.shape
    g = gaussian_window_1d(a.device)
    blurred = F.conv2d(maps.reshape(five * c, 1, h, w), g.view(1, 1, -1, 1))  # vertical pass
    blurred = F.conv2d(blurred, g.view(1, 1, 1, -1)).reshape(five, c, h - SSIM_WINDOW + 1, w - SSIM_WINDOW + 1)
    mu_x, mu_y, xx, yy, xy = blurred
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())
