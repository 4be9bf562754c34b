"""Load pretrained Swin weights into a :class:`~sdconet.modeling.backbone.swin_encoder.SwinEncoder`.

Accepted sources:

* a local file (``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)``, or ``.safetensors``) in
  either
  - the **official Microsoft layout** (e.g. ``swin_tiny_patch4_window7_224.pth``: ``{"model": {...}}``, the
    patch merging of stage i stored as ``layers.i.downsample``, ``relative_position_index``/``attn_mask``
    buffers, ``head.*`` and the final ``norm.*``), or
  - **timm's layout** (patch merging of stage i is ``layers.i.downsample``, stage 0 has none),
  optionally wrapped in ``state_dict``/``model`` dicts and with ``module.``/``backbone.`` key prefixes;
* a timm hub name such as ``"swin_tiny_patch4_window7_224"`` (downloads through timm; needs network access).

Official keys are remapped to timm's (only the ``downsample`` index moves: timm's patch merging uses the same
channel order as the official code), relative-position tables are resized (timm's bicubic resize) when the
window differs, and classifier/final-norm/buffer keys are ignored. The encoder's output LayerNorms
(``out_norms.*``) are not in any ImageNet checkpoint and are expected to stay missing.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Dict, Mapping

import torch
from timm.layers import resize_rel_pos_bias_table
from timm.models.swin_transformer import get_relative_position_index
from torch import nn

from ...engine.checkpoint_policy import check_finite

logger = logging.getLogger(__name__)

#: Key prefixes stripped from checkpoint keys (DataParallel/DDP and detection-framework wrappers).
STRIP_PREFIXES = ("module.", "backbone.")
#: Encoder keys that no ImageNet checkpoint contains (randomly initialised output norms).
ENCODER_ONLY_PREFIXES = ("out_norms.",)
#: Checkpoint keys that are deliberately not loaded: classifier, final norm, non-persistent buffers.
_IGNORED = re.compile(r"^(head\.|norm\.|fc\.)|(relative_position_index|attn_mask)$")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
#: How many key names a strict-mode error lists before summarising.
_MAX_LISTED = 20


def _read_file(path: str, allow_pickle: bool) -> Mapping:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name and the way out
        raise RuntimeError(
            f"load_swin_weights: cannot read '{path}' with torch.load(weights_only={not allow_pickle}): "
            f"{err}. "
            "If the file comes from a source you trust and holds non-tensor objects, pass allow_pickle=True."
        ) from err


def _hub_state_dict(name: str) -> Dict[str, torch.Tensor]:
    import timm

    logger.info("load_swin_weights: downloading pretrained '%s' through timm", name)
    model = timm.create_model(name, pretrained=True, num_classes=0)
    return model.state_dict()


def _unwrap(obj: Mapping, source: str) -> Dict[str, torch.Tensor]:
    """Descend into ``state_dict``/``model`` wrappers until a flat name -> tensor dict remains."""
    while isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
        for key in ("state_dict", "model", "module"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            raise ValueError(
                f"load_swin_weights: '{source}' holds no tensors at the top level nor under "
                "'state_dict'/'model' "
                f"(top-level keys: {sorted(obj)[:10]})"
            )
    if not isinstance(obj, Mapping):
        raise ValueError(f"load_swin_weights: '{source}' is not a state dict (got {type(obj).__name__})")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def is_official_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the patch merging is stored at the end of a stage (official Microsoft layout)."""
    return any(k.startswith("layers.0.downsample.") for k in state_dict)


def official_to_timm(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename official Microsoft Swin keys to timm's: ``layers.i.downsample`` ->
    ``layers.(i+1).downsample``."""
    return {
        _DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k): v
        for k, v in state_dict.items()
    }


def to_official_layout(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Convert an encoder/timm-layout state dict to the official Microsoft layout.

    Drops ``out_norms.*``, moves ``layers.i.downsample`` to ``layers.(i-1).downsample`` and adds the
    ``relative_position_index`` buffers the official files carry. Wrap the result as ``{"model": ...}`` to
    mimic the released ``.pth`` files.

    Args:
        state_dict: e.g. ``SwinEncoder.state_dict()``.
    Returns:
        A new dict with official key names.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(ENCODER_ONLY_PREFIXES):
            continue
        key = _DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
        out[key] = value
        if key.endswith("relative_position_bias_table"):
            side = (math.isqrt(value.shape[0]) + 1) // 2
            out[key.replace("relative_position_bias_table", "relative_position_index")] = (
                get_relative_position_index(side, side)
            )
    return out


def _resize_table(value: torch.Tensor, module: nn.Module) -> torch.Tensor:
    target = module.relative_position_bias_table
    return resize_rel_pos_bias_table(
        value, new_window_size=tuple(module.window_size), new_bias_shape=tuple(target.shape)
    ).to(target.dtype)


def load_swin_weights(
    encoder: nn.Module,
    path_or_name: str,
    strict_encoder: bool = True,
    allow_pickle: bool = False,
) -> dict:
    """Load an ImageNet Swin checkpoint into ``encoder`` (a ``SwinEncoder``).

    Args:
        encoder: the encoder to fill (its parameters keep timm names: ``patch_embed.*``, ``layers.*``).
        path_or_name: local checkpoint file (official or timm layout) or a timm model name (needs network).
        strict_encoder: raise when a backbone key (anything but ``out_norms.*``) is not loaded or a shape
            differs.
        allow_pickle: let ``torch.load`` unpickle arbitrary objects (only for trusted files).
    Returns:
        Report dict: ``source``, ``layout`` ("official" | "timm"), ``loaded`` (encoder keys set), ``missing``
        (encoder keys not set), ``missing_backbone`` (``missing`` minus the expected ``out_norms.*``),
        ``resized`` (relative-position tables resized), ``mismatched`` (shape conflicts, not loaded),
        ``unexpected`` (checkpoint keys the encoder lacks) and ``ignored`` (classifier, final norm, buffers).
    Raises:
        FileNotFoundError: ``path_or_name`` looks like a path but does not exist.
        RuntimeError: ``strict_encoder`` and some backbone keys are missing or mismatched.
        NonFiniteWeightsError: the checkpoint holds NaN or Inf values.
    """
    source = str(path_or_name)
    if os.path.isfile(source):
        raw = _read_file(source, allow_pickle)
    elif os.sep in source or source.endswith(_FILE_SUFFIXES):
        raise FileNotFoundError(f"load_swin_weights: checkpoint file '{source}' does not exist")
    else:
        raw = _hub_state_dict(source)
    ckpt = {_strip(k): v for k, v in _unwrap(raw, source).items()}
    check_finite(ckpt, source)  # NaN / Inf weights are an error, never a silently broken backbone
    official = is_official_layout(ckpt)
    if official:
        ckpt = official_to_timm(ckpt)

    own = encoder.state_dict()
    to_load, resized, mismatched, unexpected, ignored = {}, [], [], [], []
    for key, value in ckpt.items():
        if _IGNORED.search(key):
            ignored.append(key)
            continue
        if key not in own:
            unexpected.append(key)
            continue
        if key.endswith("relative_position_bias_table") and value.shape != own[key].shape:
            value = _resize_table(value, encoder.get_submodule(key.rsplit(".", 1)[0]))
            resized.append(key)
        if value.shape != own[key].shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs encoder {tuple(own[key].shape)}")
            continue
        to_load[key] = value
    encoder.load_state_dict(to_load, strict=False)

    missing = sorted(k for k in own if k not in to_load)
    missing_backbone = [k for k in missing if not k.startswith(ENCODER_ONLY_PREFIXES)]
    report = {
        "source": source,
        "layout": "official" if official else "timm",
        "loaded": sorted(to_load),
        "missing": missing,
        "missing_backbone": missing_backbone,
        "resized": sorted(resized),
        "mismatched": sorted(mismatched),
        "unexpected": sorted(unexpected),
        "ignored": sorted(ignored),
    }
    logger.info(
        "load_swin_weights: %s (%s layout): loaded %d/%d encoder tensors, %d missing (%d backbone), "
        "%d resized, %d mismatched, %d unexpected, %d ignored",
        source, report["layout"], len(to_load), len(own), len(missing), len(missing_backbone), len(resized),
        len(mismatched), len(unexpected), len(ignored),
    )  # fmt: skip
    if unexpected:
        logger.warning(
            "load_swin_weights: %d checkpoint keys unused, e.g. %s", len(unexpected), unexpected[:5]
        )
    problems = missing_backbone + mismatched
    if strict_encoder and problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise RuntimeError(
            f"load_swin_weights: '{source}' ({report['layout']} layout) does not fill "
            f"{len(missing_backbone)} backbone keys / has {len(mismatched)} shape mismatches:\n"
            f"  {listed}{more}\n"
            "(pass strict_encoder=False to load what matches)"
        )
    return report
