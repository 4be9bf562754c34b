"""SR evaluator: PSNR/SSIM values and the evaluator protocol."""

import math

import pytest
import torch

pytest.importorskip("detectron2")

from sdconet.d2.sr_evaluator import SREvaluator, psnr, ssim  # noqa: E402


def test_psnr_and_ssim_reference_values():
    a = torch.rand(3, 32, 32) * 255
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), rel=1e-6)  # MSE 1
    # constant images: SSIM reduces to the luminance term (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1)
    c1 = (0.01 * 255) ** 2
    flat = torch.full((3, 16, 16), 100.0)
    assert ssim(flat, flat + 10) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), rel=1e-9)
    noise = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert 1 > ssim(a, a + 10 * noise) > ssim(a, a + 40 * noise) > 0
    with pytest.raises(ValueError):
        ssim(a[:, :8, :8], a[:, :8, :8])


def test_evaluator_averages_crops_and_checks_shapes():
    hr = torch.full((3, 40, 40), 100, dtype=torch.uint8)
    sr = torch.full((3, 40, 40), 101.0)
    sr[:, :2] = 0.0  # a bad border, shaved by crop_border=2
    ev = SREvaluator(crop_border=2)
    ev.reset()
    ev.process([{"hr_image": hr}, {"hr_image": hr}, {"image": hr}], [{"sr_image": sr}, {"sr_image": sr}, {}])
    res = ev.evaluate()["sr"]
    assert res["num_images"] == 2 and res["PSNR"] == pytest.approx(20 * math.log10(255), rel=1e-6)
    ev.reset()
    with pytest.raises(ValueError, match="SR output"):
        ev.process([{"hr_image": hr}], [{"sr_image": sr[:, :38]}])
    assert SREvaluator().evaluate() == {}
