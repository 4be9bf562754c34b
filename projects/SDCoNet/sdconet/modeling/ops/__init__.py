"""Multi-scale deformable attention kernels behind one function, with a selectable backend.

Backends:

* ``"pytorch"``: :func:`~sdconet.modeling.ops.ms_deform_attn_pytorch.ms_deform_attn_pytorch` (``grid_sample``;
  any device, float32/bfloat16/float16).
* ``"triton"``: ``sdconet.modeling.ops.ms_deform_attn_triton.ms_deform_attn_triton`` (CUDA tensors only; CPU
  tensors only under Triton's interpreter, ``TRITON_INTERPRET=1``, for tests). The module is imported lazily on
  first use. The kernels are registered as the custom ops ``torch.ops.sdconet.ms_deform_attn_triton`` (+ its
  backward), so ``torch.compile`` and CUDA graphs see one opaque op per call.
* ``"auto"`` (default): Triton when the tensors are on CUDA and the Triton module imports, exposes
  ``ms_deform_attn_triton`` and (if it has ``is_triton_available``) reports it can run; otherwise PyTorch. A
  Triton that cannot be used is reported with one warning and the PyTorch path is used from then on.

The backend is chosen by :func:`set_msda_backend`, or else by the environment variable
``SDCONET_MSDA_BACKEND`` (read at call time), or else ``"auto"``. The backend actually used is logged once at
INFO per (backend, device type).
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Callable, Optional, Sequence, Set, Tuple, Union

import torch

from ..level_shapes import shape_tensors
from .ms_deform_attn_pytorch import ms_deform_attn_pytorch

logger = logging.getLogger(__name__)

__all__ = [
    "multi_scale_deformable_attention",
    "ms_deform_attn_pytorch",
    "set_msda_backend",
    "get_msda_backend",
    "MSDA_BACKENDS",
    "MSDA_BACKEND_ENV",
    "preload_triton",
]

#: Accepted backend names.
MSDA_BACKENDS = ("auto", "pytorch", "triton")
#: Environment variable consulted when no backend was set programmatically.
MSDA_BACKEND_ENV = "SDCONET_MSDA_BACKEND"
_TRITON_MODULE = "sdconet.modeling.ops.ms_deform_attn_triton"

_backend_override: Optional[str] = None
# Lazy Triton import state: None = not tried yet; otherwise (function or None, reason it is unusable).
_triton_state: Optional[Tuple[Optional[Callable[..., torch.Tensor]], str]] = None
_triton_availability: Optional[Callable[[torch.Tensor], bool]] = None
_logged: Set[Tuple[str, str]] = set()
_warned_fallback = False


def _validate_backend(name: str, source: str) -> str:
    value = str(name).strip().lower()
    if value not in MSDA_BACKENDS:
        raise ValueError(f"{source}: unknown MSDA backend {name!r}; expected one of {MSDA_BACKENDS}")
    return value


def set_msda_backend(name: Optional[str]) -> None:
    """Select the deformable-attention backend for the whole process.

    Args:
        name: ``"auto"``, ``"pytorch"`` or ``"triton"``; ``None`` clears the setting (the environment variable
            ``SDCONET_MSDA_BACKEND``, or ``"auto"``, applies again).

    Raises:
        ValueError: on an unknown name.
    """
    global _backend_override
    _backend_override = None if name is None else _validate_backend(name, "set_msda_backend")


def get_msda_backend() -> str:
    """The configured backend name: the programmatic setting, else ``$SDCONET_MSDA_BACKEND``, else ``"auto"``.

    Raises:
        ValueError: if the environment variable holds an unknown name.
    """
    if _backend_override is not None:
        return _backend_override
    env = os.environ.get(MSDA_BACKEND_ENV)
    if env:
        return _validate_backend(env, f"environment variable {MSDA_BACKEND_ENV}")
    return "auto"


def _load_triton() -> Tuple[Optional[Callable[..., torch.Tensor]], str]:
    """Imports the Triton backend once; returns (function or None, reason when None)."""
    global _triton_state, _triton_availability
    if _triton_state is None:
        try:
            module = importlib.import_module(_TRITON_MODULE)
        except Exception as err:  # any import-time failure means "not usable"
            _triton_state = (None, f"importing {_TRITON_MODULE} failed: {err!r}")
        else:
            fn = getattr(module, "ms_deform_attn_triton", None)
            if fn is None:
                _triton_state = (None, f"{_TRITON_MODULE} does not define ms_deform_attn_triton")
            else:
                _triton_state = (fn, "")
                _triton_availability = getattr(module, "is_triton_available", None)
    return _triton_state


def preload_triton() -> None:
    """Import the Triton backend now where it could run (CUDA present, or Triton's interpreter on).

    ``MSDeformAttn`` calls this at construction, so that a model compiled before its first eager call finds the
    backend (and its custom ops) already imported: an import cannot happen inside a compiled graph.
    """
    if _triton_state is None and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1"):
        _load_triton()


def _triton_unusable_reason(value: torch.Tensor) -> str:
    """Empty string if the Triton backend can run on ``value``'s device, else why not."""
    if _triton_state is None and torch.compiler.is_compiling():
        return "the Triton module was not imported before compilation (see preload_triton)"
    fn, reason = _load_triton()
    if fn is None:
        return reason
    if _triton_availability is not None and not _triton_availability(value):
        return "triton is not installed or cannot run on this device"
    return ""


def _log_once(backend: str, device: torch.device) -> None:
    if torch.compiler.is_compiling():  # logging inside a compiled graph would break it
        return
    key = (backend, device.type)
    if key not in _logged:
        _logged.add(key)
        logger.info("multi-scale deformable attention: using the %s backend on %s", backend, device.type)


def _run_triton(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    if not isinstance(spatial_shapes, torch.Tensor) or not isinstance(level_start_index, torch.Tensor):
        # the kernel reads the level layout from device tensors (cached per shapes and device in eager mode)
        spatial_shapes, level_start_index = shape_tensors(spatial_shapes, value.device)
    return _load_triton()[0](value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: Union[torch.Tensor, Sequence[Sequence[int]]],
    level_start_index: Union[torch.Tensor, Sequence[int], None],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention core, dispatched to the configured backend.

    Args:
        value: (B, S, M, Dh) per-head values, tokens flattened level by level (finest first, row-major);
            padded tokens already zeroed.
        spatial_shapes: (L, 2) long ``(H_l, W_l)``, or L pairs of Python ints (what the model passes: no host
            synchronisation, no ``torch.compile`` graph break).
        level_start_index: (L,) long exclusive cumsum of ``H_l * W_l`` (tensor, ints, or None = derived).
        sampling_locations: (B, Nq, M, L, P, 2) normalised ``(x, y)`` in each level's padded-canvas frame
            (``align_corners=False`` convention; outside reads zeros).
        attention_weights: (B, Nq, M, L, P), soft-maxed over ``L * P`` by the caller.

    Returns:
        (B, Nq, M * Dh) in ``value``'s dtype.

    Raises:
        RuntimeError: if ``"triton"`` is forced and the tensors are not on CUDA or Triton is unusable.
        ValueError: on inconsistent shapes or an unknown backend name.
    """
    global _warned_fallback
    backend = get_msda_backend()
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if backend == "triton":
        if not value.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError(
                f"multi_scale_deformable_attention: backend 'triton' was forced (set_msda_backend or "
                f"{MSDA_BACKEND_ENV}) but the tensors are on {value.device}; Triton needs CUDA tensors. "
                f"Use 'auto' or 'pytorch' on this device."
            )
        reason = _triton_unusable_reason(value)
        if reason:
            raise RuntimeError(f"multi_scale_deformable_attention: backend 'triton' was forced but {reason}")
        _log_once("triton", value.device)
        return _run_triton(*args)
    if backend == "auto" and value.is_cuda:
        reason = _triton_unusable_reason(value)
        if not reason:
            _log_once("triton", value.device)
            return _run_triton(*args)
        if not _warned_fallback and not torch.compiler.is_compiling():
            _warned_fallback = True
            logger.warning(
                "multi-scale deformable attention: Triton backend unusable (%s); falling back to PyTorch",
                reason,
            )
    _log_once("pytorch", value.device)
    return ms_deform_attn_pytorch(*args)
