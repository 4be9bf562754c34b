"""Full-model gradient-norm clipping as an optimizer subclass (framework-free).

DETR-family recipes (and the paper: ``max_norm=0.1``) clip the norm of **all** gradients taken together. detectron2's
own ``SOLVER.CLIP_GRADIENTS`` clips every parameter separately, which is a different (much weaker) operation. Doing
the clipping in ``step()`` keeps it correct under AMP too: ``GradScaler.step`` unscales the gradients before it calls
``optimizer.step()``, and skips the call on inf/NaN steps.
"""

from __future__ import annotations

from typing import Dict, Type

import torch

__all__ = ["full_model_clipping"]

_CACHE: Dict[tuple, type] = {}


def full_model_clipping(
    optimizer_cls: Type[torch.optim.Optimizer], max_norm: float = 0.1, norm_type: float = 2.0
) -> Type[torch.optim.Optimizer]:
    """A subclass of ``optimizer_cls`` whose ``step()`` first clips the global gradient norm.

    Parameters without a gradient (``.grad is None``: unused in this stage, or frozen) are ignored, exactly like
    ``torch.nn.utils.clip_grad_norm_`` does.

    Args:
        optimizer_cls: e.g. ``torch.optim.AdamW``.
        max_norm: largest allowed norm of the concatenated gradients of all parameters in all groups (> 0).
        norm_type: p of the p-norm (2.0 = L2; ``float("inf")`` = max-abs).

    Returns:
        the optimizer class (cached per arguments, so pickling/type checks stay stable). The last pre-clip norm is
        available as ``optimizer.last_grad_norm`` (a float, ``nan`` before the first step).
    """
    if max_norm <= 0:
        raise ValueError(f"full_model_clipping: max_norm must be > 0 (got {max_norm})")
    key = (optimizer_cls, float(max_norm), float(norm_type))
    if key in _CACHE:
        return _CACHE[key]

    class _FullModelClipped(optimizer_cls):
        last_grad_norm = float("nan")

        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            if params:
                total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
                self.last_grad_norm = float(total)
            return super().step(closure)

    _FullModelClipped.__name__ = f"FullModelClipped{optimizer_cls.__name__}"
    _FullModelClipped.__qualname__ = _FullModelClipped.__name__
    _CACHE[key] = _FullModelClipped
    return _FullModelClipped
