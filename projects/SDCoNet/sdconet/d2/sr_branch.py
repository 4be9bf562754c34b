"""The SR branch as an add-on to any detectron2 meta-architecture (paper Table V: "Cascade R-CNN + SR branch").

``MODEL.SR_BRANCH.ENABLED: True`` turns the configured detector (``MODEL.META_ARCHITECTURE``: ``GeneralizedRCNN``,
``RetinaNet``, or any registered one with a ``backbone``) into ``<Name>WithSR``: a subclass made by
:func:`with_sr_branch` that adds

* ``sr_branch``: a :class:`~sdconet.modeling.sr.projected.ProjectedSRDecoder` (SDCoNet's SR decoder with 1x1
  projections where the backbone's widths differ, ``MODEL.SDCONET.SR.*`` hyper-parameters) on the bottom-up
  backbone's stage outputs (``backbone.bottom_up`` of an FPN, else ``backbone``), read by a forward hook while the
  stock forward runs -- the stock code is not touched and nothing runs twice;
* ``loss_sr``: ``MODEL.SDCONET.SR.LOSS_WEIGHT`` x L1 between the SR output and the normalised HR tile (valid,
  unpadded pixels only), added to the stock loss dict while the SR branch is on (stage 2 of the gradient-routing
  schedule: :class:`~sdconet.d2.hooks.SRStageHook` calls :meth:`SRAugmented.set_sr_enabled`).

At inference the branch does not run (unless ``TEST.SR_EVAL.ENABLED`` asks for SR images), so the outputs and FLOPs
are exactly the stock detector's. Parameter names stay the stock detector's at the top level of the checkpoint
(``backbone.*``, ``proposal_generator.*``, ``roi_heads.*`` ...) and the SR decoder lives under ``sr_branch.*``:
the stock detector (detectron2's own ``build_model`` / ``DefaultPredictor`` with the same config) loads the
checkpoint after dropping those keys (:func:`stock_state_dict`; detectron2's checkpointer drops them itself with
an "unexpected keys" note).

The HR target comes from the mapper (``hr_image``, ``INPUT.LR_MODE degrade``) in the detector's pixel format
(``INPUT.FORMAT``) and is normalised with the ImageNet statistics in that channel order, whatever the detector's own
``PIXEL_STD`` is: the SR output and ``loss_sr`` live in the same space as SDCoNet's (its loss weight 5 was set for
it), not in the 0-255 range that the MSRA ResNet's std of 1 would give.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import move_device_like
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.modeling import build_model as d2_build_model
from torch import nn

from sdconet.modeling.constants import PIXEL_MEAN, PIXEL_STD
from sdconet.modeling.sr.projected import ProjectedSRDecoder

from .hr_targets import stack_hr_targets
from .solver import SR_BRANCH_PREFIX

__all__ = [
    "SRAugmented",
    "build_model",
    "feature_source",
    "resolve_sr_features",
    "sr_normalisation",
    "stock_state_dict",
    "with_sr_branch",
]

logger = logging.getLogger(__name__)

#: Output names taken as the long-skip map when present (ResNet stem, Swin patch embedding).
PATCH_NAMES = ("stem", "patch")
_CLASSES: Dict[type, type] = {}


def feature_source(backbone: nn.Module) -> Backbone:
    """The bottom-up part of a detectron2 backbone (``backbone.bottom_up`` of an FPN, else the backbone)."""
    bottom_up = getattr(backbone, "bottom_up", None)
    return bottom_up if isinstance(bottom_up, Backbone) else backbone


def resolve_sr_features(
    shapes: Mapping, in_features: Sequence[str] = (), patch_feature: str = ""
) -> Tuple[List[str], Optional[str]]:
    """Which bottom-up outputs feed the SR decoder.

    Args:
        shapes: ``{name: ShapeSpec}`` of the bottom-up backbone (``output_shape()``).
        in_features: 4 names, fine to coarse (``MODEL.SR_BRANCH.IN_FEATURES``); empty = the outputs at strides
            p, 2p, 4p, 8p other than ``stem``/``patch`` (p = the finest such stride).
        patch_feature: long-skip output (``MODEL.SR_BRANCH.PATCH_FEATURE``): a name, ``""`` = ``stem``/``patch``
            when output at stride p, ``"none"`` = none.

    Returns:
        (the 4 stage names, the patch name or None).

    Raises:
        ValueError: naming the config key and what the backbone outputs.
    """
    have = {k: (v.channels, v.stride) for k, v in shapes.items()}
    hint = (
        f"the bottom-up backbone outputs {have}; the SR branch needs 4 outputs at strides p, 2p, 4p, 8p (ResNet: "
        "res2-res5 in MODEL.RESNETS.OUT_FEATURES; Swin: stage1-stage4 in MODEL.SWIN.OUT_FEATURES) or "
        "MODEL.SR_BRANCH.IN_FEATURES naming them"
    )
    if in_features:
        names = list(in_features)
        missing = [n for n in names if n not in shapes]
        if missing:
            raise ValueError(f"MODEL.SR_BRANCH.IN_FEATURES names {missing}, which {hint[4:]}")
    else:
        stages = sorted((v.stride, k) for k, v in shapes.items() if k not in PATCH_NAMES)
        if not stages:
            raise ValueError(f"MODEL.SR_BRANCH: {hint}")
        p = stages[0][0]
        names = []
        for i in range(4):
            match = [k for s, k in stages if s == p * 2**i]
            if len(match) != 1:
                raise ValueError(f"MODEL.SR_BRANCH: {len(match)} outputs at stride {p * 2**i}; {hint}")
            names.append(match[0])
    if len(names) != 4:
        raise ValueError(f"MODEL.SR_BRANCH.IN_FEATURES must name 4 outputs, got {names}")
    strides = [shapes[n].stride for n in names]
    if strides != [strides[0] * 2**i for i in range(4)]:
        raise ValueError(f"MODEL.SR_BRANCH: {names} have strides {strides}, expected p, 2p, 4p, 8p; {hint}")
    if patch_feature == "none":
        return names, None
    if patch_feature:
        if patch_feature not in shapes or shapes[patch_feature].stride != strides[0]:
            raise ValueError(
                f"MODEL.SR_BRANCH.PATCH_FEATURE '{patch_feature}' must be a bottom-up output at stride {strides[0]} "
                f"(add it to MODEL.RESNETS.OUT_FEATURES / MODEL.SWIN.OUT_FEATURES); {hint}"
            )
        return names, patch_feature
    auto = [n for n in PATCH_NAMES if n in shapes and shapes[n].stride == strides[0]]
    return names, (auto[0] if auto else None)


class SRAugmented:
    """Mixin of the ``<Name>WithSR`` classes made by :func:`with_sr_branch` (put before the stock class in the MRO).

    Args (keyword; the stock detector's own arguments pass through):
        sr_branch: the SR decoder.
        sr_in_features: the 4 bottom-up outputs it reads, fine to coarse.
        sr_patch_feature: the long-skip output, or None.
        sr_loss_weight: weight of the L1 SR loss.
        sr_eval: in eval mode, also run the SR branch and return ``sr_image`` per image (3, s*h, s*w), float,
            0-255, in the input's pixel format.
        sr_pixel_mean, sr_pixel_std: normalisation of the SR target and output (0-255 scale, the input's channel
            order); default the ImageNet RGB statistics.
    """

    @configurable
    def __init__(
        self,
        *,
        sr_branch: ProjectedSRDecoder,
        sr_in_features: Sequence[str],
        sr_patch_feature: Optional[str],
        sr_loss_weight: float = 5.0,
        sr_eval: bool = False,
        sr_pixel_mean: Sequence[float] = PIXEL_MEAN,
        sr_pixel_std: Sequence[float] = PIXEL_STD,
        **detector_kwargs,
    ) -> None:
        super().__init__(**detector_kwargs)
        if not isinstance(getattr(self, "backbone", None), nn.Module):
            raise TypeError(
                f"{type(self).__name__}: the SR branch needs a meta-architecture with a 'backbone'"
            )
        self.sr_branch = sr_branch
        self.register_buffer(
            "sr_pixel_mean", torch.tensor(sr_pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer(
            "sr_pixel_std", torch.tensor(sr_pixel_std, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.sr_in_features = list(sr_in_features)
        self.sr_patch_feature = sr_patch_feature
        self.sr_loss_weight = float(sr_loss_weight)
        self.sr_eval = bool(sr_eval)
        self.sr_enabled = True
        self.last_stats: Dict[str, float] = {}
        self._sr_capture = False
        self._sr_features: Optional[Dict[str, torch.Tensor]] = None
        source = feature_source(self.backbone)
        names = [*self.sr_in_features, *([sr_patch_feature] if sr_patch_feature else [])]
        missing = [n for n in names if n not in source.output_shape()]
        if missing:
            raise ValueError(f"{type(self).__name__}: the bottom-up backbone does not output {missing}")
        self._sr_hook = source.register_forward_hook(self._capture_features)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        ret = super().from_config(cfg)
        backbone = ret.get("backbone")
        if not isinstance(backbone, nn.Module):
            raise TypeError(
                f"MODEL.SR_BRANCH: meta-architecture {cfg.MODEL.META_ARCHITECTURE} builds no 'backbone'; the SR "
                "branch attaches to a detectron2 backbone"
            )
        shapes = feature_source(backbone).output_shape()
        sb = cfg.MODEL.SR_BRANCH
        names, patch = resolve_sr_features(shapes, sb.IN_FEATURES, sb.PATCH_FEATURE)
        r = cfg.MODEL.SDCONET.SR
        branch = ProjectedSRDecoder(
            in_channels=[shapes[n].channels for n in names],
            patch_channels=None if patch is None else shapes[patch].channels,
            decoder_channels=tuple(sb.DECODER_CHANNELS),
            projection_groups=sb.PROJECTION_GROUPS,
            scale=r.SCALE,
            bottleneck_channels=r.BOTTLENECK_CHANNELS,
            depths=tuple(r.DEPTHS),
            num_heads=tuple(r.NUM_HEADS),
            window_size=r.WINDOW_SIZE,
            mlp_ratio=r.MLP_RATIO,
            drop_path_rate=r.DROP_PATH_RATE,
            patch_size=shapes[names[0]].stride,
        )
        logger.info(
            "SR branch on %s: stages %s (channels %s), long skip %s, %.2f M parameters (training only)",
            cfg.MODEL.META_ARCHITECTURE,
            names,
            [shapes[n].channels for n in names],
            patch,
            sum(p.numel() for p in branch.parameters()) / 1e6,
        )
        ret.update(
            sr_branch=branch,
            sr_in_features=names,
            sr_patch_feature=patch,
            sr_loss_weight=r.LOSS_WEIGHT,
            sr_eval=cfg.TEST.SR_EVAL.ENABLED,
            **sr_normalisation(cfg.INPUT.FORMAT),
        )
        return ret

    # ------------------------------------------------------------------------------------------- SR switch
    @property
    def has_sr(self) -> bool:
        return True

    @property
    def sr_scale(self) -> int:
        return self.sr_branch.scale

    def set_sr_enabled(self, enabled: bool) -> None:
        """Gradient routing switch: stage 1 (False: the branch is not run, no ``loss_sr``) or stage 2 (True)."""
        self.sr_enabled = bool(enabled)

    def _capture_features(self, module, inputs, output) -> None:
        if self._sr_capture:
            self._sr_features = output

    # --------------------------------------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[Dict]):
        """The stock forward; while the SR branch is on (training) or ``sr_eval`` (eval), also the SR branch.

        Training: the stock loss dict + ``loss_sr``. Eval: the stock outputs (+ ``sr_image`` with ``sr_eval``).
        """
        run_sr = self.sr_enabled if self.training else self.sr_eval
        if not run_sr:
            return super().forward(batched_inputs)
        self._sr_capture, self._sr_features = True, None
        try:
            out = super().forward(batched_inputs)
            feats = self._sr_features
        finally:
            self._sr_capture, self._sr_features = False, None
        if feats is None:
            raise RuntimeError(
                f"{type(self).__name__}: the bottom-up backbone did not run during the stock forward; the SR "
                "branch cannot attach to this meta-architecture"
            )
        patch = feats[self.sr_patch_feature] if self.sr_patch_feature else None
        sr = self.sr_branch([feats[n] for n in self.sr_in_features], patch)
        lr_sizes = [tuple(x["image"].shape[-2:]) for x in batched_inputs]
        if self.training:
            hr, valid = self._hr_targets(batched_inputs, lr_sizes, sr)
            diff = (sr.float() - hr).abs() * valid
            losses = dict(out)
            losses["loss_sr"] = self.sr_loss_weight * diff.sum() / (valid.sum() * sr.shape[1]).clamp(min=1)
            self.last_stats = {"sr_psnr": self._psnr(sr.detach(), hr, valid)}
            return losses
        s = self.sr_scale
        for r, img, (h, w) in zip(out, sr, lr_sizes):
            r["sr_image"] = self._denormalise(img[:, : s * h, : s * w])
        return out

    def _normalise(self, img: torch.Tensor) -> torch.Tensor:
        img = move_device_like(img, self.sr_pixel_mean).float()
        return (img - self.sr_pixel_mean) / self.sr_pixel_std

    def _denormalise(self, img: torch.Tensor) -> torch.Tensor:
        return (img.float() * self.sr_pixel_std + self.sr_pixel_mean).clamp(0, 255)

    def _hr_targets(
        self, batched_inputs: List[Dict], lr_sizes: List[Tuple[int, int]], sr: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised HR tiles on the SR canvas (zero padding) and the (B, 1, sH, sW) mask of valid pixels."""
        return stack_hr_targets(
            batched_inputs,
            lr_sizes,
            self.sr_scale,
            tuple(sr.shape),
            sr.device,
            self._normalise,
            type(self).__name__,
            "INPUT.LR_MODE 'degrade' provides it; with 'real' set SOLVER.SR_START_EPOCH beyond the run or disable "
            "MODEL.SR_BRANCH",
        )

    @torch.no_grad()
    def _psnr(self, sr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> float:
        """Mean PSNR (dB) over the batch, 8-bit range, valid HR pixels only."""
        a, b = self._denormalise(sr), self._denormalise(hr)
        mse = (((a - b) ** 2) * valid).flatten(1).sum(1) / (valid.flatten(1).sum(1) * a.shape[1]).clamp(min=1)
        return float((10 * torch.log10(255.0**2 / mse.clamp(min=1e-10))).mean())


def sr_normalisation(image_format: str) -> Dict[str, List[float]]:
    """``{"sr_pixel_mean", "sr_pixel_std"}``: the ImageNet statistics in the channel order of ``image_format``."""
    if image_format == "RGB":
        return {"sr_pixel_mean": list(PIXEL_MEAN), "sr_pixel_std": list(PIXEL_STD)}
    if image_format == "BGR":
        return {"sr_pixel_mean": list(PIXEL_MEAN)[::-1], "sr_pixel_std": list(PIXEL_STD)[::-1]}
    raise ValueError(
        f"MODEL.SR_BRANCH: INPUT.FORMAT must be RGB or BGR for the SR target (got '{image_format}')"
    )


def with_sr_branch(meta_arch_cls: type) -> type:
    """``<Name>WithSR``: the stock meta-architecture class with :class:`SRAugmented` in front (cached per class)."""
    if issubclass(meta_arch_cls, SRAugmented):
        return meta_arch_cls
    cls = _CLASSES.get(meta_arch_cls)
    if cls is None:
        name = f"{meta_arch_cls.__name__}WithSR"
        cls = type(
            name,
            (SRAugmented, meta_arch_cls),
            {
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": f"{meta_arch_cls.__name__} + SR branch.",
            },
        )
        globals()[name] = cls  # importable by name, so the model pickles
        _CLASSES[meta_arch_cls] = cls
    return cls


def build_model(cfg) -> nn.Module:
    """detectron2's ``build_model``, with the SR branch when ``MODEL.SR_BRANCH.ENABLED`` (not for SDCoNet)."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if not cfg.MODEL.SR_BRANCH.ENABLED:
        return d2_build_model(cfg)
    if arch == "SDCoNet":
        logger.warning(
            "MODEL.SR_BRANCH.ENABLED is ignored for SDCoNet: MODEL.SDCONET.VARIANT decides its SR branch"
        )
        return d2_build_model(cfg)
    model = with_sr_branch(META_ARCH_REGISTRY.get(arch))(cfg)
    model.to(torch.device(cfg.MODEL.DEVICE))
    return model


def stock_state_dict(model_or_state: object) -> Dict[str, torch.Tensor]:
    """The state dict without the SR branch's keys: what the stock detector loads (strictly)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    return {k: v for k, v in state.items() if not k.startswith(SR_BRANCH_PREFIX)}
