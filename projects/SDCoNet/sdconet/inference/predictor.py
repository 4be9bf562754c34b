"""`Predictor`: a trained core model plus everything needed to run it on 8-bit RGB images.

It owns the model (eval mode, on one device), the pixel statistics, the class names and the numeric precision,
and turns a list of LR model inputs (``(h, w, 3)`` uint8 RGB arrays, any sizes) into detections in each input's
pixel frame, batching them (padded bottom/right, with the padding mask). Build it from a config + checkpoint with
:meth:`Predictor.from_files` (no detectron2 needed) or from a model you already have.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config_io import (
    InferenceSettings,
    inference_settings_from_dict,
    load_yaml_config,
    sdconet_config_from_dict,
)
from ..modeling.build import build_sdconet
from ..modeling.config import SDCoNetConfig
from ..modeling.constants import PIXEL_MEAN, PIXEL_STD
from .checkpoint import infer_num_classes, load_state_into, read_checkpoint
from .dataset_info import resolve_class_names

logger = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "Predictor"]

PRECISIONS = ("fp32", "bf16")
DEFAULT_BATCH_SIZE = 8


def _compile_mode(compile: bool | str | None, device: torch.device) -> str | None:
    """``torch.compile`` mode for the ``compile`` argument, or None for eager."""
    if compile is None or compile is False or compile in ("off", "none", "eager"):
        return None
    if compile is True or compile == "on":
        return "reduce-overhead" if device.type == "cuda" else "default"
    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if compile not in modes:
        raise ValueError(f"Predictor: compile must be a bool or one of {modes}, got {compile!r}")
    return str(compile)


def _check_image(img: Any, index: int) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"Predictor: image {index} must be an (h, w, 3) uint8 RGB array, got {desc}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"Predictor: image {index} is empty ({img.shape})")
    return img


class Predictor:
    """Run a core SDCoNet on 8-bit RGB LR images.

    Args:
        model: the core model (:func:`sdconet.modeling.build.build_sdconet`), weights loaded.
        class_names: one name per class (default ``class_<i>``).
        pixel_mean: RGB mean, 0-255 scale (the training config's ``MODEL.PIXEL_MEAN``).
        pixel_std: RGB std, 0-255 scale.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (default: where the model is).
        precision: ``"fp32"`` or ``"bf16"`` (autocast; outputs are returned as float32).
        batch_size: images per forward pass.
        compile: run the model through ``torch.compile`` (one static graph per input shape, ``fullgraph=True``):
            False/None (eager, default), True (``"reduce-overhead"`` = CUDA graphs on CUDA, ``"default"`` on CPU)
            or a ``torch.compile`` mode name. The first call of every new batch shape compiles (seconds to
            minutes); feed one shape (``predict(..., pad_to=...)`` and full batches, as ``tools/predict.py
            --compile`` does) so that it compiles once. ``compile_log`` records each compilation's time.
        compile_backend: ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` compiles fast, for tests).
        default_mode: scene-prediction input mode implied by the config (``"hr"`` or ``"native"``).
        config: the :class:`SDCoNetConfig` the model was built from (kept for reference), or None.
        settings: the config's non-model settings (dataset names, LR mode), or None.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        class_names: Sequence[str] | None = None,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        batch_size: int = DEFAULT_BATCH_SIZE,
        default_mode: str = "hr",
        config: SDCoNetConfig | None = None,
        settings: InferenceSettings | None = None,
        compile: bool | str | None = False,
        compile_backend: str = "inductor",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"Predictor: precision must be one of {PRECISIONS}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"Predictor: batch_size must be >= 1, got {batch_size}")
        if default_mode not in ("hr", "native"):
            raise ValueError(f"Predictor: default_mode must be 'hr' or 'native', got {default_mode!r}")
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.num_classes = int(model.detector.num_classes)
        names = (
            list(class_names) if class_names is not None else [f"class_{i}" for i in range(self.num_classes)]
        )
        if len(names) != self.num_classes:
            raise ValueError(f"Predictor: {len(names)} class names for a {self.num_classes}-class model")
        self.class_names = names
        self.mean = torch.tensor(pixel_mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(pixel_std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.default_mode = default_mode
        self.config = config
        self.settings = settings
        self.compile_mode = _compile_mode(compile, self.device)
        self._compiled = None
        if self.compile_mode is not None:
            # One static graph of the model's sync-free eval path; extras come back padded and are cropped here.
            options = {"mode": self.compile_mode} if compile_backend == "inductor" else {}
            self._compiled = torch.compile(
                self.model.forward_padded, fullgraph=True, dynamic=False, backend=compile_backend, **options
            )
        #: ``[{"shape": (B, 3, H, W), "extras": ..., "seconds": first-call time}]``, one entry per compilation.
        self.compile_log: list[dict[str, Any]] = []
        self._compiled_keys: set = set()

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_files(
        cls,
        config: str | os.PathLike | Mapping,
        weights: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        batch_size: int = DEFAULT_BATCH_SIZE,
        class_names: Sequence[str] | None = None,
        allow_pickle: bool = False,
        compile: bool | str | None = False,
    ) -> Predictor:
        """Build the model a yaml config describes and load a checkpoint into it.

        Args:
            config: a yaml file (``_BASE_`` resolved; a training run's ``OUTPUT_DIR/config.yaml`` or the file it was
                started with) or an already loaded mapping.
            weights: detectron2 checkpoint (``model_final.pth``) or plain state dict (see
                :mod:`sdconet.inference.checkpoint`).
            device, precision, batch_size, compile: see the class.
            class_names: overrides; otherwise the checkpoint's ``class_names``, then the config's dataset, then
                ``class_<i>``.
            allow_pickle: see :func:`~sdconet.inference.checkpoint.read_checkpoint`.

        Raises:
            CheckpointMismatchError: the checkpoint does not fit the config (the keys are named).
        """
        cfg = load_yaml_config(config) if not isinstance(config, Mapping) else config
        ckpt = read_checkpoint(weights, allow_pickle=allow_pickle)
        core_cfg = sdconet_config_from_dict(cfg, num_classes=infer_num_classes(ckpt.state_dict))
        settings: InferenceSettings = inference_settings_from_dict(cfg)
        model = build_sdconet(core_cfg)
        load_state_into(model, ckpt.state_dict, source=str(weights))
        names = resolve_class_names(
            core_cfg.num_classes, class_names, ckpt.class_names, settings.train_datasets
        )
        return cls(
            model,
            class_names=names,
            pixel_mean=settings.pixel_mean,
            pixel_std=settings.pixel_std,
            device=device,
            precision=precision,
            batch_size=batch_size,
            default_mode=settings.default_mode,
            config=core_cfg,
            settings=settings,
            compile=compile,
        )

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def sr_scale(self) -> int:
        """SR factor s of the model (LR = HR / s)."""
        return int(self.model.sr_scale)

    @property
    def has_sr(self) -> bool:
        return bool(self.model.has_sr)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------------- running
    def _batch(
        self, images: Sequence[np.ndarray], pad_to: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (B, 3, H, W) batch padded bottom/right with 0 (= the mean colour) and its padding mask; H, W
        are the largest input's, or ``pad_to`` (which must hold every input)."""
        h = max(im.shape[0] for im in images)
        w = max(im.shape[1] for im in images)
        if pad_to is not None:
            if h > pad_to[0] or w > pad_to[1]:
                raise ValueError(f"Predictor: an input of {h}x{w} pixels does not fit pad_to={tuple(pad_to)}")
            h, w = int(pad_to[0]), int(pad_to[1])
        batch = torch.zeros((len(images), 3, h, w), dtype=torch.float32, device=self.device)
        mask = torch.ones((len(images), h, w), dtype=torch.bool, device=self.device)
        for i, im in enumerate(images):
            t = torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1).float()
            batch[i, :, : im.shape[0], : im.shape[1]] = (t - self.mean[0]) / self.std[0]
            mask[i, : im.shape[0], : im.shape[1]] = False
        return batch, mask

    def _forward(
        self, batch: torch.Tensor, mask: torch.Tensor, **extras: bool
    ) -> list[dict[str, torch.Tensor]]:
        """The model's per-image outputs. Inputs come from uint8 arrays and a mask built here, so the model's value
        checks (a host synchronisation) are skipped; compiled: the padded graph, then cropping on the host."""
        if self._compiled is None:
            return self.model(batch, mask, check_values=False, **extras)
        key = (tuple(batch.shape), tuple(sorted(k for k, v in extras.items() if v)))
        t0 = time.perf_counter()
        padded = self._compiled(batch, mask, check_values=False, **extras)
        if key not in self._compiled_keys:  # the first call of a shape compiles it
            if batch.is_cuda:
                torch.cuda.synchronize(batch.device)
            seconds = time.perf_counter() - t0
            self._compiled_keys.add(key)
            self.compile_log.append({"shape": list(key[0]), "extras": list(key[1]), "seconds": seconds})
            logger.info("torch.compile (%s): compiled for %s in %.1f s", self.compile_mode, key[0], seconds)
        return self.model.unbatch(padded)

    def _to_uint8(self, normalised: torch.Tensor) -> np.ndarray:
        """(3, H, W) normalised image -> (H, W, 3) uint8 RGB (rounded, clipped)."""
        img = normalised.float() * self.std[0] + self.mean[0]
        return img.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    @torch.inference_mode()
    def predict(
        self,
        images: Sequence[np.ndarray],
        *,
        return_sr: bool = False,
        return_saliency: bool = False,
        return_kept: bool = False,
        pad_to: tuple[int, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Detect objects in LR model inputs.

        Args:
            images: (h, w, 3) uint8 RGB arrays (the model's LR input; any sizes, batched ``batch_size`` at a time).
            return_sr: also return the SR image (variants with an SR branch).
            return_saliency: also return the per-level saliency maps (saliency variants).
            return_kept: also return the per-layer kept-token maps (token-filtering variants).
            pad_to: pad every batch to this ``(h, w)`` (with the padding mask) instead of its largest input, so that
                all forward passes have one shape.

        Returns:
            One dict per image: ``boxes`` (k, 4) float32 ``x1, y1, x2, y2`` in that image's pixels, ``scores`` (k,)
            float32, ``labels`` (k,) int64 in ``[0, num_classes)``; extras when requested: ``sr`` (s*h, s*w, 3) uint8,
            ``saliency`` list (levels, finest first) of (h_l, w_l) float32 maps in [0, 1], ``kept`` list (encoder
            layers) of lists (levels) of (h_l, w_l) bool maps.
        """
        images = [_check_image(im, i) for i, im in enumerate(images)]
        out: list[dict[str, Any]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch, mask = self._batch(chunk, pad_to)
            with self._autocast():
                results = self._forward(
                    batch, mask, return_sr=return_sr, return_saliency=return_saliency, return_kept=return_kept
                )
            for im, res in zip(chunk, results):
                h, w = im.shape[:2]
                scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=res["boxes"].device)
                item: dict[str, Any] = {
                    "boxes": (res["boxes"].float() * scale).cpu().numpy().astype(np.float32),
                    "scores": res["scores"].float().cpu().numpy().astype(np.float32),
                    "labels": res["labels"].cpu().numpy().astype(np.int64),
                }
                if "sr" in res:
                    item["sr"] = self._to_uint8(res["sr"])
                if "saliency" in res:
                    item["saliency"] = [m.float().cpu().numpy() for m in res["saliency"]]
                if "kept" in res:
                    item["kept"] = [[k.cpu().numpy().astype(bool) for k in layer] for layer in res["kept"]]
                out.append(item)
        return out
