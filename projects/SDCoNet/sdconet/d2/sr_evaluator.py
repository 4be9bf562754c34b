"""``SREvaluator``: PSNR and SSIM of the SR output against the HR tile (test split).

Needs the meta-architecture to return ``sr_image`` (``TEST.SR_EVAL.ENABLED``; the SR branch runs at evaluation only
then) and the mapper to emit ``hr_image`` (``INPUT.LR_MODE: degrade``). Metrics are computed per image on RGB, 8-bit
range (the SR output is rounded to integers first, as when it is saved), optionally after shaving ``crop_border``
pixels from each border, and averaged over images.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

__all__ = ["SREvaluator", "psnr", "ssim"]

logger = logging.getLogger(__name__)

#: 8-bit peak value.
DATA_RANGE = 255.0
#: SSIM constants and Gaussian window of Wang et al. 2004 (window 11, sigma 1.5, K1 0.01, K2 0.03).
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two (3, H, W) images on the 0-255 scale (inf when identical)."""
    mse = F.mse_loss(a.double(), b.double()).item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(DATA_RANGE**2 / mse)).item()


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of two (3, H, W) images on the 0-255 scale (per channel, Gaussian window, 'valid' region)."""
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim: images must be at least {SSIM_WINDOW} px per side, got {tuple(a.shape[-2:])}"
        )
    x, y = a.double()[:, None], b.double()[:, None]  # (3, 1, H, W): channels as batch
    g = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=a.device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(g**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    var_x = F.conv2d(x * x, win) - mu_x**2
    var_y = F.conv2d(y * y, win) - mu_y**2
    cov = F.conv2d(x * y, win) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())


class SREvaluator(DatasetEvaluator):
    """Averages PSNR/SSIM of ``outputs[i]["sr_image"]`` vs ``inputs[i]["hr_image"]`` over the dataset.

    Args:
        crop_border: pixels removed from every border of both images before measuring (>= 0).
    """

    def __init__(self, crop_border: int = 0) -> None:
        if crop_border < 0:
            raise ValueError(f"SREvaluator: crop_border must be >= 0 (got {crop_border})")
        self.crop_border = int(crop_border)
        self._scores: List[Dict[str, float]] = []

    def reset(self) -> None:
        self._scores = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            if "sr_image" not in out or "hr_image" not in inp:
                continue
            sr = out["sr_image"].detach().float().round()
            hr = inp["hr_image"].to(sr.device).float()
            if sr.shape != hr.shape:
                raise ValueError(
                    f"SREvaluator: {inp.get('file_name', '?')} SR output {tuple(sr.shape)} != HR {tuple(hr.shape)}"
                )
            c = self.crop_border
            if c:
                sr, hr = sr[:, c:-c, c:-c], hr[:, c:-c, c:-c]
            self._scores.append({"psnr": psnr(sr, hr), "ssim": ssim(sr, hr)})

    def evaluate(self):
        scores = list(itertools.chain(*comm.gather(self._scores, dst=0)))
        if not comm.is_main_process():
            return {}
        if not scores:
            logger.warning(
                "SREvaluator: no SR outputs (is TEST.SR_EVAL.ENABLED set and does the variant have SR?)"
            )
            return {}
        finite = [s["psnr"] for s in scores if s["psnr"] != float("inf")]
        res = OrderedDict(
            PSNR=sum(finite) / max(1, len(finite)),
            SSIM=sum(s["ssim"] for s in scores) / len(scores),
            num_images=float(len(scores)),
        )
        logger.info("SR quality on %d images: PSNR %.2f dB, SSIM %.4f", len(scores), res["PSNR"], res["SSIM"])
        return {"sr": res}
