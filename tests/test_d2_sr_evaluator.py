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


def test_bicubic_baseline_and_png_samples(tmp_path):
    import numpy as np

    from sdconet.data.image_io import read_image_rgb
    from sdconet.inference.visualize import bicubic_upscale

    g = torch.Generator().manual_seed(0)
    hr = torch.randint(0, 256, (3, 32, 48), generator=g, dtype=torch.uint8)
    lr = torch.nn.functional.interpolate(hr[None].float(), scale_factor=0.5, mode="bilinear")[0].round().byte()
    sr = hr.float() + 3.0 * torch.randn(3, 32, 48, generator=g)
    ev = SREvaluator(save=1, save_dir=str(tmp_path / "sr"), prefix="my set")
    ev.reset()
    batch = [{"image": lr, "hr_image": hr, "file_name": "a/tile_1.png"}, {"image": lr, "hr_image": hr}]
    ev.process(batch, [{"sr_image": sr}, {"sr_image": sr}])
    res = ev.evaluate()["sr"]
    bic = torch.from_numpy(bicubic_upscale(lr.permute(1, 2, 0).numpy(), (32, 48))).permute(2, 0, 1).float()
    assert res["bicubic_PSNR"] == pytest.approx(psnr(bic, hr.float()))
    assert res["bicubic_SSIM"] == pytest.approx(ssim(bic, hr.float()))
    assert res["PSNR"] > res["bicubic_PSNR"]  # noise of std 3 beats bicubic x2 of random pixels
    assert len(ev.saved) == 1 and ev.saved[0].endswith("my_set_000_tile_1.png")
    png = read_image_rgb(ev.saved[0])
    assert png.ndim == 3 and png.shape[1] > 3 * 48 and np.asarray(png).std() > 0  # three panels side by side
