"""Read SDCoNet's detectron2-style yaml configs without detectron2 (framework-free).

:func:`load_yaml_config` reads a yaml file and resolves its ``_BASE_`` chain (paths relative to the file that
names them; the child's keys win, nested mappings merge key by key) into a plain nested ``dict``.
:func:`sdconet_config_from_dict` maps the keys ``MODEL.SDCONET.*``, ``MODEL.SDCONET.SALIENCY.*``,
``MODEL.SDCONET.SR.*``, ``MODEL.SWIN.*`` and ``TEST.DETECTIONS_PER_IMAGE`` onto :class:`SDCoNetConfig` exactly as
``sdconet.d2.config.sdconet_config_from_cfg`` does; a missing key keeps the :class:`SDCoNetConfig` default (which is
also the default of the detectron2 key). :func:`inference_settings_from_dict` reads the few non-model keys the
inference tools need (pixel statistics, input format, LR mode, dataset names).

Any nested mapping works as input, including a yacs/detectron2 ``CfgNode`` (a ``dict`` subclass), e.g. a run's
``OUTPUT_DIR/config.yaml`` loaded by detectron2.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .modeling.config import SDCoNetConfig, SRConfig, SwinConfig
from .modeling.constants import PIXEL_MEAN, PIXEL_STD

__all__ = [
    "BASE_KEY",
    "InferenceSettings",
    "inference_settings_from_dict",
    "load_yaml_config",
    "lookup",
    "sdconet_config_from_dict",
]

#: The key naming a parent config (detectron2 / fvcore convention).
BASE_KEY = "_BASE_"
#: Guard against ``_BASE_`` cycles.
MAX_BASE_DEPTH = 32
_MISSING = object()


# ---------------------------------------------------------------------------------------------------- yaml files
def _deep_merge(base: dict, child: Mapping) -> dict:
    """``base`` updated with ``child``: nested mappings merge, everything else is replaced (new dict)."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid yaml: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {str(path)!r}: the top level must be a mapping, got {type(data).__name__}"
        )
    return data


def load_yaml_config(path: str | os.PathLike, _depth: int = 0, _chain: tuple[str, ...] = ()) -> dict:
    """Read a yaml config and resolve its ``_BASE_`` chain.

    Args:
        path: the yaml file. ``_BASE_`` (a path or a list of paths, relative to the file that names them, ``~``
            expanded) is loaded first and the file's own keys are merged over it.

    Returns:
        The merged configuration as a nested ``dict`` (no ``_BASE_`` key left).

    Raises:
        FileNotFoundError: a file of the chain cannot be read (the message names it).
        ValueError: invalid yaml, a non-mapping document, or a ``_BASE_`` cycle.
    """
    path = Path(os.path.expanduser(str(path))).resolve()
    if str(path) in _chain or _depth > MAX_BASE_DEPTH:
        raise ValueError(f"config {str(path)!r}: _BASE_ cycle through {' -> '.join(_chain)}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, (str, os.PathLike)):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        base_path = Path(os.path.expanduser(str(base)))
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        merged = _deep_merge(merged, load_yaml_config(base_path, _depth + 1, _chain + (str(path),)))
    return _deep_merge(merged, data)


# ------------------------------------------------------------------------------------------------ key look-ups
def lookup(cfg: Mapping, dotted: str, default: Any = _MISSING) -> Any:
    """``cfg["A"]["B"]["C"]`` for ``dotted = "A.B.C"``, or ``default`` when a level is missing.

    Raises:
        KeyError: the key is missing and no default was given (the message names the full key).
    """
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise KeyError(f"config key {dotted} is missing")
            return default
        node = node[part]
    return node


def _decode(value: Any) -> Any:
    """yacs semantics: a string that is a Python literal (``"('a_train',)"``, ``"[64, 64]"``) is that literal."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _tuple(value: Any, key: str) -> tuple:
    value = _decode(value)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ValueError(f"config key {key} must be a list, got {value!r}")


def sdconet_config_from_dict(cfg: Mapping, num_classes: int | None = None) -> SDCoNetConfig:
    """Translate a detectron2-style config mapping into :class:`SDCoNetConfig`.

    Args:
        cfg: nested mapping (``dict`` from :func:`load_yaml_config`, or a ``CfgNode``).
        num_classes: used when ``MODEL.SDCONET.NUM_CLASSES`` is 0 (= "from the training set", resolved by detectron2
            into a run's ``config.yaml``) -- e.g. the row count of a checkpoint's class head.

    Returns:
        The validated core configuration.

    Raises:
        ValueError: ``NUM_CLASSES`` is 0 and ``num_classes`` was not given, a list key holds a scalar, or a value is
            invalid (the core's validation names the field).
    """
    d = SDCoNetConfig()
    s, r = d.swin, d.sr

    def get(key: str, default: Any) -> Any:
        return lookup(cfg, key, default)

    def get_tuple(key: str, default: tuple) -> tuple:
        return _tuple(get(key, default), key)

    classes = get("MODEL.SDCONET.NUM_CLASSES", d.num_classes)
    if classes is None or int(classes) <= 0:
        if num_classes is None:
            raise ValueError(
                "MODEL.SDCONET.NUM_CLASSES is 0 (= from the training set) in this config; use the run's resolved "
                "OUTPUT_DIR/config.yaml, or pass num_classes (e.g. inferred from the checkpoint)"
            )
        classes = num_classes
    m, sal, sr, sw = "MODEL.SDCONET.", "MODEL.SDCONET.SALIENCY.", "MODEL.SDCONET.SR.", "MODEL.SWIN."
    return SDCoNetConfig(
        num_classes=int(classes),
        variant=get(m + "VARIANT", d.variant),
        swin=SwinConfig(
            embed_dim=get(sw + "EMBED_DIM", s.embed_dim),
            depths=get_tuple(sw + "DEPTHS", s.depths),
            num_heads=get_tuple(sw + "NUM_HEADS", s.num_heads),
            window_size=get(sw + "WINDOW_SIZE", s.window_size),
            mlp_ratio=get(sw + "MLP_RATIO", s.mlp_ratio),
            drop_path_rate=get(sw + "DROP_PATH_RATE", s.drop_path_rate),
            img_size=get_tuple(sw + "IMG_SIZE", s.img_size),
        ),
        sr=SRConfig(
            scale=get(sr + "SCALE", r.scale),
            bottleneck_channels=get(sr + "BOTTLENECK_CHANNELS", r.bottleneck_channels),
            depths=get_tuple(sr + "DEPTHS", r.depths),
            num_heads=get_tuple(sr + "NUM_HEADS", r.num_heads),
            window_size=get(sr + "WINDOW_SIZE", r.window_size),
            mlp_ratio=get(sr + "MLP_RATIO", r.mlp_ratio),
            drop_path_rate=get(sr + "DROP_PATH_RATE", r.drop_path_rate),
            loss_weight=get(sr + "LOSS_WEIGHT", r.loss_weight),
        ),
        hidden_dim=get(m + "HIDDEN_DIM", d.hidden_dim),
        nheads=get(m + "NHEADS", d.nheads),
        num_points=get(m + "NUM_POINTS", d.num_points),
        enc_layers=get(m + "ENC_LAYERS", d.enc_layers),
        dec_layers=get(m + "DEC_LAYERS", d.dec_layers),
        dim_feedforward=get(m + "DIM_FEEDFORWARD", d.dim_feedforward),
        dropout=get(m + "DROPOUT", d.dropout),
        num_queries=get(m + "NUM_QUERIES", d.num_queries),
        dn_number=get(m + "DN_NUMBER", d.dn_number),
        label_noise_ratio=get(m + "LABEL_NOISE_RATIO", d.label_noise_ratio),
        box_noise_scale=get(m + "BOX_NOISE_SCALE", d.box_noise_scale),
        dn_max_gt=get(m + "DN_MAX_GT", d.dn_max_gt),
        weight_class=get(m + "CLASS_WEIGHT", d.weight_class),
        weight_bbox=get(m + "BBOX_WEIGHT", d.weight_bbox),
        weight_giou=get(m + "GIOU_WEIGHT", d.weight_giou),
        cost_class=get(m + "COST_CLASS", d.cost_class),
        cost_bbox=get(m + "COST_BBOX", d.cost_bbox),
        cost_giou=get(m + "COST_GIOU", d.cost_giou),
        focal_alpha=get(m + "FOCAL_ALPHA", d.focal_alpha),
        focal_gamma=get(m + "FOCAL_GAMMA", d.focal_gamma),
        topk_test=get("TEST.DETECTIONS_PER_IMAGE", d.topk_test),
        filter_mode=get(sal + "FILTER_MODE", d.filter_mode),
        level_ratios=get_tuple(sal + "LEVEL_RATIOS", d.level_ratios),
        layer_ratios=get_tuple(sal + "LAYER_RATIOS", d.layer_ratios),
        alpha_mode=get(sal + "ALPHA_MODE", d.alpha_mode),
        alpha_value=get(sal + "ALPHA_VALUE", d.alpha_value),
        saliency_propagation=get(sal + "PROPAGATION", d.saliency_propagation),
        saliency_target=get(sal + "TARGET", d.saliency_target),
        saliency_sigma=get(sal + "SIGMA", d.saliency_sigma),
        saliency_loss_weight=get(sal + "LOSS_WEIGHT", d.saliency_loss_weight),
        saliency_level_bounds=tuple(float(v) for v in get_tuple(sal + "LEVEL_RANGES", d.saliency_level_bounds)),
        saliency_always_mark_center=bool(get(sal + "ALWAYS_MARK_CENTER", d.saliency_always_mark_center)),
        value_mode=get(m + "VALUE_MODE", d.value_mode),
        background_mode=get(sal + "BACKGROUND_MODE", d.background_mode),
    )


# -------------------------------------------------------------------------------------------- inference settings
@dataclass(frozen=True)
class InferenceSettings:
    """Non-model config values the inference tools need.

    Attributes:
        pixel_mean: RGB mean on the 0-255 scale (``MODEL.PIXEL_MEAN``).
        pixel_std: RGB std on the 0-255 scale (``MODEL.PIXEL_STD``).
        lr_mode: ``INPUT.LR_MODE``: ``"degrade"`` (HR in, degraded per tile) or ``"real"`` (the file is the LR
            input); the inference mode defaults to ``hr`` resp. ``native`` from it.
        train_datasets: ``DATASETS.TRAIN`` names (used to look up class names and the tiling preset).
        test_datasets: ``DATASETS.TEST`` names.
    """

    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    lr_mode: str = "degrade"
    train_datasets: tuple[str, ...] = ()
    test_datasets: tuple[str, ...] = ()

    @property
    def default_mode(self) -> str:
        """``"hr"`` for ``LR_MODE degrade``, ``"native"`` for ``LR_MODE real``."""
        return "native" if self.lr_mode == "real" else "hr"


def _names(value: Any) -> tuple[str, ...]:
    value = _decode(value)  # configs write DATASETS.TRAIN as the string "('a_train',)"
    if isinstance(value, str):
        value = [value] if value else []
    return tuple(str(v) for v in (value or ()))


def inference_settings_from_dict(cfg: Mapping) -> InferenceSettings:
    """Read ``MODEL.PIXEL_MEAN/STD``, ``INPUT.FORMAT``, ``INPUT.LR_MODE`` and ``DATASETS.TRAIN/TEST``.

    Raises:
        ValueError: ``INPUT.FORMAT`` is not ``RGB`` (the model takes RGB) or the pixel statistics are not 3 values.
    """
    fmt = lookup(cfg, "INPUT.FORMAT", "RGB")
    if fmt != "RGB":
        raise ValueError(f"INPUT.FORMAT must be 'RGB' for SDCoNet, got {fmt!r}")
    mean = tuple(float(v) for v in lookup(cfg, "MODEL.PIXEL_MEAN", PIXEL_MEAN))
    std = tuple(float(v) for v in lookup(cfg, "MODEL.PIXEL_STD", PIXEL_STD))
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"MODEL.PIXEL_MEAN / PIXEL_STD need 3 values, got {mean} / {std}")
    lr_mode = lookup(cfg, "INPUT.LR_MODE", "degrade")
    if lr_mode not in ("degrade", "real"):
        raise ValueError(f"INPUT.LR_MODE must be 'degrade' or 'real', got {lr_mode!r}")
    return InferenceSettings(
        pixel_mean=mean,
        pixel_std=std,
        lr_mode=lr_mode,
        train_datasets=_names(lookup(cfg, "DATASETS.TRAIN", ())),
        test_datasets=_names(lookup(cfg, "DATASETS.TEST", ())),
    )
