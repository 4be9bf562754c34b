"""``SREvaluator``: PSNR and SSIM of the SR output -- and of bicubic upsampling of the same LR input -- against the
HR tile (test split), and PNG samples.

Needs the meta-architecture to return ``sr_image`` (``TEST.SR_EVAL.ENABLED``; the SR branch runs at evaluation only
then) and the mapper to emit ``hr_image`` (``INPUT.LR_MODE: degrade``). Metrics are computed per image on RGB, 8-bit
range (the SR output is rounded to integers first, as when it is saved), optionally after shaving ``crop_border``
pixels from each border, and averaged over images. The bicubic baseline upsamples the LR input ``image`` by the same
factor (``sdconet.inference.visualize.bicubic_upscale``) and is measured identically. With ``save`` > 0 the first
``save`` images are written as PNG (bicubic | SR | HR with PSNR in the titles, ``sr_figure``).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from sdconet.data.image_io import write_image
from sdconet.inference.visualize import bicubic_upscale, sr_figure

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


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class SREvaluator(DatasetEvaluator):
    """Averages PSNR/SSIM of ``outputs[i]["sr_image"]`` and of bicubic upsampling of ``inputs[i]["image"]`` vs
    ``inputs[i]["hr_image"]`` over the dataset (results ``sr/PSNR``, ``sr/SSIM``, ``sr/bicubic_PSNR``,
    ``sr/bicubic_SSIM``, ``sr/num_images``).

    Args:
        crop_border: pixels removed from every border of both images before measuring (>= 0).
        save: write the first ``save`` images (main process) as PNG to ``save_dir`` (0 = none).
        save_dir: folder of the PNGs (needed with ``save``), e.g. ``OUTPUT_DIR/report/sr``.
        prefix: file-name prefix (the dataset name).
        image_format: channel order of the images (``INPUT.FORMAT``, ``RGB`` or ``BGR``), for the PNGs.
    """

    def __init__(
        self,
        crop_border: int = 0,
        save: int = 0,
        save_dir: Optional[str] = None,
        prefix: str = "",
        image_format: str = "RGB",
    ) -> None:
        if crop_border < 0:
            raise ValueError(f"SREvaluator: crop_border must be >= 0 (got {crop_border})")
        if save < 0 or (save and not save_dir):
            raise ValueError(f"SREvaluator: save must be >= 0 and needs save_dir (got {save}, {save_dir!r})")
        self.crop_border = int(crop_border)
        self.save = int(save)
        self.save_dir = save_dir
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", prefix)
        self.bgr = image_format == "BGR"
        self._scores: List[Dict[str, float]] = []
        self.saved: List[str] = []

    def reset(self) -> None:
        self._scores = []
        self.saved = []

    def _save(self, inp, lr: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor) -> None:
        if not comm.is_main_process() or len(self.saved) >= self.save:
            return
        stem = os.path.splitext(os.path.basename(str(inp.get("file_name", "image"))))[0]
        name = f"{self.prefix}_{len(self.saved):03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}.png"
        path = os.path.join(self.save_dir, name)
        lr_, sr_, hr_ = (_hwc(t.flip(0) if self.bgr else t) for t in (lr, sr, hr))  # PNGs are RGB
        write_image(path, sr_figure(lr_, sr_, hr_))
        self.saved.append(path)

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
            lr = inp["image"].to(sr.device).float() if "image" in inp else None
            bic = None
            if lr is not None:
                up = bicubic_upscale(_hwc(lr), tuple(hr.shape[-2:]))
                bic = torch.from_numpy(up).permute(2, 0, 1).to(sr.device).float()
            if self.save:
                self._save(inp, lr if lr is not None else sr, sr, hr)
            c = self.crop_border
            if c:
                sr, hr = sr[:, c:-c, c:-c], hr[:, c:-c, c:-c]
                bic = None if bic is None else bic[:, c:-c, c:-c]
            score = {"psnr": psnr(sr, hr), "ssim": ssim(sr, hr)}
            if bic is not None:
                score.update(bicubic_psnr=psnr(bic, hr), bicubic_ssim=ssim(bic, hr))
            self._scores.append(score)

    def evaluate(self):
        scores = list(itertools.chain(*comm.gather(self._scores, dst=0)))
        if not comm.is_main_process():
            return {}
        if not scores:
            logger.warning(
                "SREvaluator: no SR outputs (is TEST.SR_EVAL.ENABLED set and does the variant have SR?)"
            )
            return {}
        def mean(key: str) -> float:
            vals = [s[key] for s in scores if key in s and s[key] != float("inf")]
            return sum(vals) / len(vals) if vals else float("nan")

        res = OrderedDict(PSNR=mean("psnr"), SSIM=mean("ssim"))
        if any("bicubic_psnr" in s for s in scores):
            res["bicubic_PSNR"] = mean("bicubic_psnr")
            res["bicubic_SSIM"] = mean("bicubic_ssim")
        res["num_images"] = float(len(scores))
        logger.info(
            "SR quality on %d images: PSNR %.2f dB, SSIM %.4f (bicubic: PSNR %.2f dB, SSIM %.4f)%s",
            len(scores), res["PSNR"], res["SSIM"], res.get("bicubic_PSNR", float("nan")),
            res.get("bicubic_SSIM", float("nan")),
            f"; {len(self.saved)} PNG(s) in {self.save_dir}" if self.saved else "",
        )  # fmt: skip
        return {"sr": res}
