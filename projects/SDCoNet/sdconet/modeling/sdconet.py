"""SDCoNet: a Swin-T encoder shared by an SR decoder and a saliency-driven DINO detector (paper Fig. 2)."""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .backbone.swin_encoder import SwinEncoder
from .constants import PIXEL_MEAN, PIXEL_STD
from .dino.detector import DINODetector
from .input_checks import check_input_values
from .level_shapes import as_shape_list
from .losses.targets import sanitize_targets
from .postprocess import topk_detections_batched
from .sr.decoder import SRDecoder

logger = logging.getLogger(__name__)

Targets = List[Dict[str, torch.Tensor]]


class SDCoNet(nn.Module):
    """The full model and its ablation variants.

    Children: ``encoder`` (shared Swin-T), ``detector`` (detection branch), ``sr_decoder`` (SR branch, or None),
    and, in the serial variant only, ``sr_encoder`` (the SR path's own Swin-T; detection then runs on the SR
    image). Gradient routing: while ``sr_enabled`` is False the SR decoder is not executed (training), so its
    parameters receive no gradient at all; the serial variant must run SR to detect, so there the SR path runs
    under ``torch.no_grad`` instead.

    Args:
        encoder: the shared (or, serial: the detection) Swin encoder.
        detector: the detection branch (:class:`DINODetector`).
        sr_decoder: the SR decoder or None (detection-only variants).
        sr_encoder: serial variant only: the Swin encoder of the SR path.
        sr_scale: SR factor s (HR = s x LR).
        sr_loss_weight: weight of the L1 SR loss (5 in the official recipe).
        topk_test: detections kept per image at inference.
    """

    def __init__(
        self,
        *,
        encoder: SwinEncoder,
        detector: DINODetector,
        sr_decoder: Optional[SRDecoder] = None,
        sr_encoder: Optional[SwinEncoder] = None,
        sr_scale: int = 2,
        sr_loss_weight: float = 5.0,
        topk_test: int = 300,
    ) -> None:
        super().__init__()
        if sr_encoder is not None and sr_decoder is None:
            raise ValueError("SDCoNet: the serial variant (sr_encoder given) needs an sr_decoder")
        self.encoder = encoder
        self.detector = detector
        self.sr_decoder = sr_decoder
        self.sr_encoder = sr_encoder
        self.sr_scale = sr_scale
        self.sr_loss_weight = sr_loss_weight
        self.topk_test = topk_test
        self.sr_enabled = sr_decoder is not None
        #: Check input values (NaN/Inf, padding-mask layout) in ``forward``: a host synchronisation, skipped under
        #: ``torch.compile``/export. Callers that check at the host boundary (predictor, tools, the detectron2
        #: meta-architecture) pass ``check_values=False`` to ``forward`` instead.
        self.check_values = True
        #: Statistics of the last forward (0-dim tensors or floats; read them with ``float()`` on the host).
        self.last_stats: Dict[str, Union[float, torch.Tensor]] = {}
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    # ----------------------------------------------------------------------------------------------------------
    @property
    def has_sr(self) -> bool:
        """Whether this variant has an SR branch."""
        return self.sr_decoder is not None

    @property
    def serial(self) -> bool:
        return self.sr_encoder is not None

    @property
    def size_divisibility(self) -> int:
        """LR inputs are padded (bottom/right) to a multiple of this."""
        return (self.sr_encoder or self.encoder).size_divisibility

    def set_sr_enabled(self, enabled: bool) -> None:
        """Gradient routing switch: stage 1 (False) or stage 2 (True). No-op for variants without SR."""
        self.sr_enabled = bool(enabled) and self.has_sr

    # ----------------------------------------------------------------------------------------------------------
    def _prepare_inputs(
        self,
        images: torch.Tensor,
        pixel_mask: Optional[torch.Tensor],
        hr_images: Optional[torch.Tensor],
        check_values: Optional[bool] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Static checks (types, shapes, dtypes: free, graph-safe), value checks (see ``check_values``), padding."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"SDCoNet: images must be a (B, 3, H, W) tensor of normalised RGB, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"SDCoNet: images must be floating point (normalised), got {images.dtype}")
        param_dtype = next(self.parameters()).dtype
        if images.dtype != param_dtype:
            raise ValueError(
                f"SDCoNet: images are {images.dtype} but the model's weights are {param_dtype}; pass "
                f"{param_dtype} images (for mixed precision keep float32 inputs and use torch.autocast)"
            )
        bsz, _, h, w = images.shape
        if bsz == 0 or h == 0 or w == 0:
            raise ValueError(f"SDCoNet: empty batch: images of shape {tuple(images.shape)}")
        if pixel_mask is None:
            pixel_mask = torch.zeros(bsz, h, w, dtype=torch.bool, device=images.device)
        if pixel_mask.shape != (bsz, h, w) or pixel_mask.dtype != torch.bool:
            raise ValueError(
                f"SDCoNet: pixel_mask must be bool (B, H, W) = {(bsz, h, w)} (True = padding), "
                f"got {pixel_mask.dtype} {tuple(pixel_mask.shape)}"
            )
        if hr_images is not None:
            s = self.sr_scale
            if (
                not isinstance(hr_images, torch.Tensor)
                or hr_images.dim() != 4
                or hr_images.shape[:2] != (bsz, 3)
            ):
                shape = (
                    tuple(hr_images.shape)
                    if isinstance(hr_images, torch.Tensor)
                    else type(hr_images).__name__
                )
                raise ValueError(f"SDCoNet: hr_images must be ({bsz}, 3, {s}H, {s}W), got {shape}")
            if hr_images.dtype != images.dtype:
                raise ValueError(f"SDCoNet: hr_images are {hr_images.dtype} but images are {images.dtype}")
            if tuple(hr_images.shape[-2:]) != (s * h, s * w):
                raise ValueError(
                    f"SDCoNet: hr_images are {tuple(hr_images.shape[-2:])}, expected exactly {s} x the LR images "
                    f"{(h, w)} = {(s * h, s * w)} (pad the HR batch like the LR batch)"
                )
        if self.check_values if check_values is None else check_values:
            if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
                check_input_values(images, pixel_mask, hr_images)
        div = self.size_divisibility
        pad_h, pad_w = (-h) % div, (-w) % div
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
            pixel_mask = F.pad(pixel_mask, (0, pad_w, 0, pad_h), value=True)
        if hr_images is not None:
            s = self.sr_scale
            want_h, want_w = images.shape[-2] * s, images.shape[-1] * s  # after the size-divisibility padding
            hr_images = F.pad(hr_images, (0, want_w - hr_images.shape[-1], 0, want_h - hr_images.shape[-2]))
        return images, pixel_mask, hr_images

    def _hr_valid_mask(self, pixel_mask: torch.Tensor) -> torch.Tensor:
        """(B, sH, sW) bool, True = valid HR pixel (s x the valid LR region)."""
        s = self.sr_scale
        return ~pixel_mask.repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)

    def _run_sr(self, images: torch.Tensor, enc: Optional[dict]) -> torch.Tensor:
        if self.serial:
            enc = self.sr_encoder(images)
        return self.sr_decoder(enc)

    # ----------------------------------------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,
        pixel_mask: Optional[torch.Tensor] = None,
        targets: Optional[Targets] = None,
        hr_images: Optional[torch.Tensor] = None,
        *,
        return_sr: bool = False,
        return_saliency: bool = False,
        return_kept: bool = False,
        check_values: Optional[bool] = None,
    ):
        """Train: weighted losses. Eval: per-image detections.

        Args:
            images: (B, 3, h, w) LR images, RGB normalised with ``PIXEL_MEAN/PIXEL_STD``; padded bottom/right
                (sizes that are not a multiple of ``size_divisibility`` are padded here).
            pixel_mask: (B, h, w) bool, True = padding; None = no padding.
            targets: training only: per image ``{"labels": int64 (n,), "boxes": (n, 4) cxcywh normalised to the
                unpadded image}``; n = 0 is legal.
            hr_images: (B, 3, s*h, s*w) normalised HR images, required while the SR branch trains.
            return_sr / return_saliency / return_kept: eval only: also return the SR image, the per-level saliency
                maps (sigmoid) and the per-layer kept-token maps, each cropped to the image's valid region (on
                the host, after the graph: see :meth:`forward_padded` to compile a call with extras).
            check_values: check the input values (NaN/Inf, padding at the top-left): a host synchronisation,
                never done under ``torch.compile``; None = ``self.check_values`` (True by default). Callers that
                checked their inputs on the host pass False.
        Returns:
            training: dict of weighted scalar losses ``loss_*`` (``loss_sr`` only while SR is enabled);
            eval: list (per image) of ``{"boxes": (k, 4) x1y1x2y2 normalised to the unpadded image,
            "scores": (k,), "labels": (k,) int64}`` plus the requested extras.
        """
        if self.training:
            images, pixel_mask, hr_images = self._prepare_inputs(images, pixel_mask, hr_images, check_values)
            return self._forward_train(images, pixel_mask, targets, hr_images)
        padded = self.forward_padded(
            images,
            pixel_mask,
            return_sr=return_sr,
            return_saliency=return_saliency,
            return_kept=return_kept,
            check_values=check_values,
        )
        return self.unbatch(padded)

    def forward_padded(
        self,
        images: torch.Tensor,
        pixel_mask: Optional[torch.Tensor] = None,
        *,
        return_sr: bool = False,
        return_saliency: bool = False,
        return_kept: bool = False,
        check_values: Optional[bool] = None,
    ) -> Dict[str, object]:
        """The eval forward as one static graph: batched outputs, extras padded (no host synchronisation).

        Every shape depends only on the input's shape, so ``torch.compile(model.forward_padded, fullgraph=True)``
        compiles it once per input size, extras included. :meth:`unbatch` turns the result into the per-image
        list that ``forward`` returns (cropping the extras on the host).

        Args: as :meth:`forward` (eval).
        Returns:
            ``{"boxes": (B, k, 4), "scores": (B, k), "labels": (B, k), "valid_size": (B, 2) long valid LR
            (h, w), "valid_hw": (B, L, 2) long valid tokens per detection level}`` plus, when requested,
            ``"sr": (B, 3, sH, sW)``, ``"saliency": [(B, H_l, W_l)] * L`` (sigmoid) and ``"kept": [(B, S) bool]
            * encoder layers``, all on the padded canvas.
        """
        images, pixel_mask, _ = self._prepare_inputs(images, pixel_mask, None, check_values)
        outputs, sr = self.inference_outputs(images, pixel_mask, run_sr=return_sr)
        boxes, scores, labels = topk_detections_batched(
            outputs["pred_logits"], outputs["pred_boxes"], self.topk_test
        )
        if not torch.compiler.is_exporting():  # an exported graph has no module state to write to
            self.last_stats = {"kept_token_ratio": _kept_ratio(outputs)}
        result: Dict[str, object] = {
            "boxes": boxes,
            "scores": scores,
            "labels": labels,
            "valid_size": torch.stack([(~pixel_mask[:, :, 0]).sum(1), (~pixel_mask[:, 0, :]).sum(1)], dim=1),
            "valid_hw": outputs["valid_hw"],
        }
        if return_sr and sr is not None:
            result["sr"] = sr
        if return_saliency and outputs["saliency_logits"] is not None:
            result["saliency"] = [m.sigmoid() for m in outputs["saliency_logits"]]
        if return_kept and outputs["kept_masks"]:
            result["kept"] = list(outputs["kept_masks"])
            result["spatial_shapes"] = outputs["spatial_shapes"]
        return result

    def unbatch(self, padded: Dict[str, object]) -> List[dict]:
        """Per-image results from :meth:`forward_padded`'s batched outputs.

        Detections are views (no copy, no synchronisation). Extras (SR image, saliency maps, kept-token maps) are
        cropped to each image's valid region, which reads the valid sizes on the host (one synchronisation, only
        when extras are present).
        """
        boxes, scores, labels = padded["boxes"], padded["scores"], padded["labels"]
        results = [
            {"boxes": boxes[b], "scores": scores[b], "labels": labels[b]} for b in range(boxes.shape[0])
        ]
        if not any(key in padded for key in ("sr", "saliency", "kept")):
            return results
        valid_size = padded["valid_size"].tolist()
        valid_hw = padded["valid_hw"].tolist()
        shapes = padded["spatial_shapes"].tolist() if "kept" in padded else None
        s = self.sr_scale
        for b, res in enumerate(results):
            vh, vw = valid_size[b]
            if "sr" in padded:
                res["sr"] = padded["sr"][b, :, : vh * s, : vw * s]
            if "saliency" in padded:
                res["saliency"] = [m[b, :h, :w] for m, (h, w) in zip(padded["saliency"], valid_hw[b])]
            if "kept" in padded:
                res["kept"] = [_split_levels(k[b], shapes, valid_hw[b]) for k in padded["kept"]]
        return results

    def _detect(self, images, pixel_mask, targets, enc=None, sr_image=None):
        if self.serial:
            det_mask = ~self._hr_valid_mask(pixel_mask)
            enc = self.encoder(sr_image)
            return self.detector(enc["stages"][1:], det_mask, targets)
        return self.detector(enc["stages"][1:], pixel_mask, targets)

    def _forward_train(self, images, pixel_mask, targets, hr_images) -> Dict[str, torch.Tensor]:
        if targets is None:
            raise ValueError(
                "SDCoNet: targets are required in training mode (use [] entries for empty images)"
            )
        if len(targets) != images.shape[0]:
            raise ValueError(
                f"SDCoNet: got {len(targets)} target dicts for a batch of {images.shape[0]} images"
            )
        targets = sanitize_targets(targets, self.detector.num_classes, images.device)
        sr_trains = self.sr_enabled
        if sr_trains and hr_images is None:
            raise ValueError("SDCoNet: hr_images are required while the SR branch is enabled (stage 2)")
        enc = None if self.serial else self.encoder(images)
        sr = None
        if self.serial:
            with torch.set_grad_enabled(sr_trains):
                sr = self._run_sr(images, None)
        elif sr_trains:
            sr = self._run_sr(images, enc)
        outputs = self._detect(images, pixel_mask, targets, enc=enc, sr_image=sr)
        losses = self.detector.losses(outputs, targets, targets_checked=True)  # sanitised above
        stats = {"kept_token_ratio": _kept_ratio(outputs)}
        if sr_trains:
            valid = self._hr_valid_mask(pixel_mask).unsqueeze(1).to(sr.dtype)
            diff = (sr.float() - hr_images.float()).abs() * valid
            losses["loss_sr"] = self.sr_loss_weight * diff.sum() / (valid.sum() * 3).clamp(min=1)
            stats["sr_psnr"] = self._psnr(sr.detach(), hr_images, valid)
        self.last_stats = stats
        return losses

    @torch.no_grad()
    def _psnr(self, sr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Mean PSNR (dB) over the batch, 8-bit range, valid HR pixels only (0-dim tensor: no host read)."""
        mean, std = self.pixel_mean.float(), self.pixel_std.float()
        a = (sr.float() * std + mean).clamp(0, 255)
        b = (hr.float() * std + mean).clamp(0, 255)
        mse = (((a - b) ** 2) * valid).flatten(1).sum(1) / (valid.flatten(1).sum(1) * 3).clamp(min=1)
        return (10 * torch.log10(255.0**2 / mse.clamp(min=1e-10))).mean()

    def inference_outputs(
        self, images: torch.Tensor, pixel_mask: torch.Tensor, run_sr: bool = False
    ) -> Tuple[dict, Optional[torch.Tensor]]:
        """The deployed inference path on already-prepared inputs (no validation, no padding).

        The SR decoder runs only when the variant needs it to detect (serial) or ``run_sr`` asks for it.

        Returns:
            the detector's raw outputs (see :meth:`DINODetector.forward`) and the SR image (B, 3, sH, sW) or None.
        """
        enc = None if self.serial else self.encoder(images)
        sr = None
        if self.serial or (run_sr and self.has_sr):
            sr = self._run_sr(images, enc)
        return self._detect(images, pixel_mask, None, enc=enc, sr_image=sr), sr


def _kept_ratio(outputs: dict) -> Union[float, torch.Tensor]:
    """Fraction of valid tokens updated per encoder layer, averaged over layers (1.0 without filtering).

    A 0-dim float64 tensor (no host synchronisation); read it with ``float()`` on the host.
    """
    kept = outputs["kept_masks"]
    if not kept:
        return 1.0
    valid = torch.cat([~m.flatten(1) for m in outputs["level_padding"]], 1)
    num_valid = valid.sum().double().clamp(min=1)
    ratios = [(k & valid).sum().double() / num_valid for k in kept]
    return torch.stack(ratios).mean()


def _split_levels(flat: torch.Tensor, spatial_shapes, valid_hw) -> List[torch.Tensor]:
    """(S,) per-token values -> list of (h_valid, w_valid) maps, one per level (shapes as ints or tensors)."""
    out, start = [], 0
    for (h, w), (vh, vw) in zip(as_shape_list(spatial_shapes), as_shape_list(valid_hw)):
        out.append(flat[start : start + h * w].view(h, w)[:vh, :vw])
        start += h * w
    return out
