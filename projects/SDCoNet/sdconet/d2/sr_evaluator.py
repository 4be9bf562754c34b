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
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from sdconet.data.image_io import write_image
from sdconet.evaluation.sr_quality import psnr, ssim
from sdconet.inference.visualize import bicubic_upscale, sr_figure

__all__ = ["SREvaluator", "psnr", "ssim"]

logger = logging.getLogger(__name__)

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
