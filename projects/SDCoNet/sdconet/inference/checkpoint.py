"""Load trained weights into a core :class:`~sdconet.modeling.sdconet.SDCoNet` (no detectron2 needed).

Accepted files (``torch.save`` pickles):

* detectron2 checkpoints written by ``train_net.py`` (``model_final.pth``, ``model_XXXXXXX.pth``):
  ``{"model": state_dict, "optimizer": ..., "iteration": ...}`` whose keys carry the meta-architecture's prefix
  ``core.`` (``core.encoder...``, ``core.detector...``);
* a plain core state dict (``torch.save(model.state_dict(), path)``), or ``{"state_dict": ...}``;
* keys prefixed ``module.`` (saved from a DistributedDataParallel wrapper).

Optional metadata next to the weights (``{"model": ..., "class_names": [...]}``) is returned for the caller.
Loading follows :mod:`sdconet.engine.checkpoint_policy`: strict (a checkpoint that does not match the model built
from the config raises :class:`CheckpointMismatchError` naming the missing, unexpected and wrongly-shaped keys), NaN /
Inf weights refused, and the only partial load allowed for inference is ``sr_branch`` (an SR-augmented checkpoint
into its detector without SR), logged.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine.checkpoint_policy import (
    ALLOWED_BY_PURPOSE,
    CheckpointMismatchError,
    CheckpointReadError,
    check_finite,
    plan_load,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_HEAD_KEY",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "LoadedCheckpoint",
    "infer_num_classes",
    "load_state_into",
    "read_checkpoint",
]

#: Prefixes stripped from checkpoint keys, in this order: DDP wrapper, detectron2 meta-architecture.
KEY_PREFIXES = ("module.", "core.")
#: The encoder-proposal class head: its weight has one row per class.
CLASS_HEAD_KEY = "detector.enc_class_head.weight"
#: Entries of a training checkpoint that are not metadata (optimizer, scheduler and trainer/hook states).
_TRAINING_STATE = ("optimizer", "scheduler", "trainer")
#: Keys listed before "..." when a file holds no weights.
MAX_KEYS_SHOWN = 12


@dataclass
class LoadedCheckpoint:
    """Model weights and metadata read from a file.

    Attributes:
        path: the file.
        state_dict: tensors with the ``core.`` / ``module.`` prefixes removed (keys as in the core model).
        meta: everything else stored next to the weights (``iteration``, ``class_names``, ...), without the
            optimizer, scheduler and trainer states.
        format: ``"detectron2"`` (``{"model": ...}``), ``"state_dict"`` or ``"wrapped_state_dict"``.
    """

    path: str
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    format: str = "state_dict"

    @property
    def class_names(self) -> list[str] | None:
        names = self.meta.get("class_names")
        return [str(n) for n in names] if isinstance(names, (list, tuple)) else None


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(state)
    for prefix in KEY_PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | os.PathLike, allow_pickle: bool = False) -> LoadedCheckpoint:
    """Read a checkpoint file (see the module docstring for the formats).

    Args:
        path: the ``.pth`` file.
        allow_pickle: also unpickle arbitrary Python objects (``torch.load(weights_only=False)``). Only for
            files you trust; detectron2 and plain state-dict files load without it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a torch checkpoint, or holds no model tensors (the message names the file).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        hint = "" if allow_pickle else " (if you trust the file, retry with --allow-pickle)"
        raise ValueError(f"cannot load checkpoint {path!r}: {exc}{hint}") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointReadError(
            f"cannot load checkpoint {path!r}: not a torch checkpoint or truncated ({reason})"
        ) from exc
    meta: dict[str, Any] = {}
    if _is_state_dict(obj):
        state, fmt = obj, "state_dict"
    elif isinstance(obj, Mapping) and _is_state_dict(obj.get("model")):
        state, fmt = obj["model"], "detectron2"
        meta = {k: v for k, v in obj.items() if k not in _TRAINING_STATE + ("model",)}
    elif isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
        state, fmt = obj["state_dict"], "wrapped_state_dict"
        meta = {k: v for k, v in obj.items() if k not in _TRAINING_STATE + ("state_dict",)}
    else:
        keys = sorted(obj)[:MAX_KEYS_SHOWN] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"checkpoint {path!r} holds no model weights: expected a state dict, {{'model': state_dict}} "
            f"(detectron2) or {{'state_dict': ...}}; found {keys}"
        )
    return LoadedCheckpoint(path=path, state_dict=_strip_prefixes(state), meta=meta, format=fmt)


def infer_num_classes(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Number of classes of a (prefix-stripped) SDCoNet state dict, from its class head; None if absent."""
    weight = state_dict.get(CLASS_HEAD_KEY)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def load_state_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "<state dict>",
    allow: tuple[str, ...] = ALLOWED_BY_PURPOSE["eval"],
) -> None:
    """Copy ``state_dict`` into ``model`` (:mod:`sdconet.engine.checkpoint_policy`).

    Args:
        model: the core model built from the config.
        state_dict: prefix-stripped tensors (:attr:`LoadedCheckpoint.state_dict`).
        source: the file name used in error messages.
        allow: partial-load rules that may apply (default: ``sr_branch``, as for evaluation); ``()`` = exact.

    Raises:
        NonFiniteWeightsError: NaN / Inf values (the tensors are named).
        CheckpointMismatchError: missing / unexpected keys or shape differences no allowed rule covers (all named).
    """
    own = model.state_dict()
    check_finite(state_dict, source, own)
    plan = plan_load(own, state_dict, source, allow)
    model.load_state_dict(plan.state, strict=False)
    plan.log(logger)
    logger.info("loaded %d tensors from %s", len(plan.state), source)
