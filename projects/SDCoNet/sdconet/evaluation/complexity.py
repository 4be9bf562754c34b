"""Model complexity: parameters and inference FLOPs (one multiply-add counts as one FLOP, like the paper).

Two counters:

* ``"fvcore"`` (default, the paper's convention): traces the module with ``torch.jit`` and counts matmul /
  linear / conv / einsum, plus its handlers for norms, ``grid_sampler`` and upsampling. Ops it has no handler
  for (``scaled_dot_product_attention``, ``topk``, ``gather``/``scatter``, softmax, elementwise work ...) are
  not counted and are reported in ``unsupported`` so a reader knows what is missing. The trace keeps only ops
  that reach the returned tensors.
* ``"torch"``: ``torch.utils.flop_counter.FlopCounterMode`` (dispatcher level, no tracing, so it works on any
  code that runs). It counts matmul / linear / conv / attention kernels (SDPA included) but no norms or
  ``grid_sample``; its ``2 x MAC`` totals are halved here to the same multiply-add convention.

Every FLOP figure returned here is per image (total / batch) in GFLOPs (1e9).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Accepted FLOP counters.
FLOP_COUNTERS = ("fvcore", "torch")
#: ``FlopCounterMode`` counts a multiply-add as 2 FLOPs; fvcore (and the paper) as 1.
TORCH_FLOPS_PER_MAC = 2
GIGA = 1e9


class InferencePath(nn.Module):
    """Wrap an ``SDCoNet`` so that tracing sees exactly its inference path and returns plain tensors.

    The SR decoder is skipped unless the variant needs it to detect (serial), as at deployment. The saliency
    maps are returned too, so that the saliency predictor, which the model runs at inference in every variant
    that has it (also with ``filter_mode="none"``, where nothing else consumes it), is counted.

    Returns (from ``forward``): ``(pred_logits (B, K, C), pred_boxes (B, K, 4), *saliency_logits)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, pixel_mask: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out, _ = self.model.inference_outputs(images, pixel_mask)
        saliency = tuple(out["saliency_logits"] or ())
        return (out["pred_logits"], out["pred_boxes"], *saliency)


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameters in total, per top-level child, and in the deployed (inference) model.

    ``inference`` leaves out the SR decoder unless the model is the serial variant (which needs it to detect).
    """
    per_child = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    total = sum(p.numel() for p in model.parameters())
    inference = total - (per_child.get("sr_decoder", 0) if not getattr(model, "serial", False) else 0)
    return {"total": total, "inference": inference, **{f"child.{k}": v for k, v in per_child.items()}}


@dataclass
class FlopReport:
    """FLOPs of one forward, per image.

    Attributes:
        gflops: total GFLOPs per image (multiply-add = 1).
        counter: ``"fvcore"`` or ``"torch"``.
        by_module: GFLOPs per image of every submodule up to the requested depth (``""`` = the whole module).
        by_operator: GFLOPs per image per counted operator.
        unsupported: {op name: occurrences} of ops the counter saw but could not count (fvcore only).
        batch: the batch the count was taken at.
    """

    gflops: float
    counter: str
    by_module: Dict[str, float] = field(default_factory=dict)
    by_operator: Dict[str, float] = field(default_factory=dict)
    unsupported: Dict[str, int] = field(default_factory=dict)
    batch: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _strip_prefix(name: str, prefix: str) -> str:
    if name == prefix:
        return ""
    return name[len(prefix) + 1 :] if prefix and name.startswith(prefix + ".") else name


def _keep_depth(name: str, depth: int) -> bool:
    return name == "" or name.count(".") < depth


def _fvcore_report(
    module: nn.Module, inputs: Tuple[torch.Tensor, ...], batch: int, depth: int, prefix: str
) -> FlopReport:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, inputs)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    total = analysis.total()
    by_module = {}
    for name, flops in analysis.by_module().items():
        short = _strip_prefix(name, prefix)
        if (prefix == "" or name == prefix or name.startswith(prefix + ".")) and _keep_depth(short, depth):
            by_module[short] = flops / batch / GIGA
    by_operator = {op: flops / batch / GIGA for op, flops in analysis.by_operator().items()}
    return FlopReport(
        gflops=total / batch / GIGA,
        counter="fvcore",
        by_module=by_module,
        by_operator=by_operator,
        unsupported=dict(Counter(analysis.unsupported_ops())),
        batch=batch,
    )


def _torch_report(
    module: nn.Module, inputs: Tuple[torch.Tensor, ...], batch: int, depth: int, prefix: str
) -> FlopReport:
    from torch.utils.flop_counter import FlopCounterMode

    # The counter's module tracker hooks tensors that require grad; parameters are switched off meanwhile.
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    scale = TORCH_FLOPS_PER_MAC * batch * GIGA
    counts = counter.get_flop_counts()
    root = type(module).__name__
    full_prefix = root + ("." + prefix if prefix else "")
    by_module = {}
    for name, ops in counts.items():
        if name == "Global" or not (name == full_prefix or name.startswith(full_prefix + ".")):
            continue
        short = _strip_prefix(name, full_prefix)
        if _keep_depth(short, depth):
            by_module[short] = sum(ops.values()) / scale
    total = counter.get_total_flops() / scale
    by_module[""] = total  # the tracker only names modules whose forward ran; the whole is the total
    by_operator = {str(op): flops / scale for op, flops in counts.get("Global", {}).items()}
    return FlopReport(
        gflops=total,
        counter="torch",
        by_module=by_module,
        by_operator=by_operator,
        unsupported={},
        batch=batch,
    )


@torch.no_grad()
def module_flops(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    counter: str = "fvcore",
    batch: Optional[int] = None,
    module_depth: int = 2,
    module_prefix: str = "",
) -> FlopReport:
    """FLOPs of ``module(*inputs)`` in eval mode, per image.

    Args:
        module: any module whose forward takes ``inputs`` and returns tensors (a tuple of tensors for fvcore).
        inputs: positional inputs; the first one's leading dimension is the batch unless ``batch`` is given.
        counter: ``"fvcore"`` (paper convention, jit trace) or ``"torch"`` (``FlopCounterMode``).
        batch: images in ``inputs`` (the totals are divided by it).
        module_depth: keep ``by_module`` entries with fewer than this many dots after ``module_prefix``.
        module_prefix: report submodules under this qualified name only, with the prefix removed.

    Returns:
        A :class:`FlopReport`.

    Raises:
        ValueError: on an unknown counter.
    """
    if counter not in FLOP_COUNTERS:
        raise ValueError(f"module_flops: counter must be one of {FLOP_COUNTERS}, got {counter!r}")
    inputs = tuple(inputs)
    batch = int(batch if batch is not None else inputs[0].shape[0])
    was_training = module.training
    module.eval()
    try:
        if counter == "fvcore":
            return _fvcore_report(module, inputs, batch, module_depth, module_prefix)
        return _torch_report(module, inputs, batch, module_depth, module_prefix)
    finally:
        module.train(was_training)


def _lr_inputs(model: nn.Module, lr_size: Tuple[int, int], batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    param = next(model.parameters())
    # Random (not zero) images: the count does not depend on values, but no code path may special-case zeros.
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *lr_size, generator=gen).to(device=param.device, dtype=param.dtype)
    mask = torch.zeros(batch, *lr_size, dtype=torch.bool, device=param.device)
    return images, mask


def inference_flops(
    model: nn.Module,
    lr_size: Tuple[int, int],
    batch: int = 1,
    *,
    counter: str = "fvcore",
    module_depth: int = 2,
) -> FlopReport:
    """FLOPs of one inference of an ``SDCoNet`` on ``batch`` LR images of ``lr_size = (h, w)``, per image.

    Counts :class:`InferencePath` (encoder, detector and, for the serial variant, the SR path). ``by_module``
    keys are the model's own names (``encoder``, ``detector.encoder``, ``sr_decoder`` ...).
    """
    images, mask = _lr_inputs(model, lr_size, batch)
    return module_flops(
        InferencePath(model),
        (images, mask),
        counter=counter,
        batch=batch,
        module_depth=module_depth,
        module_prefix="model",
    )


def inference_gflops(
    model: nn.Module, lr_size: Tuple[int, int], batch: int = 1
) -> Tuple[float, Dict[str, int]]:
    """GFLOPs (fvcore, multiply-add = 1) of one inference on ``batch`` LR images of ``lr_size``.

    Returns:
        (gflops per image, {unsupported op name: occurrences}).
    """
    report = inference_flops(model, lr_size, batch, counter="fvcore")
    return report.gflops, report.unsupported
