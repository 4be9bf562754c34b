"""Export the inference path to ONNX and check it with onnxruntime.

The exported graph is :class:`OnnxDetector`: 0-255 RGB images + padding mask in, top-k detections out. It is the
model's own sync-free eval path (``SDCoNet.forward_padded``) with the pure-PyTorch deformable attention, traced
by ``torch.export`` at one spatial size (every level shape, token budget and top-k size is fixed by it); the
batch dimension stays dynamic. Needs the optional extra ``pip install -e ".[export]"`` (onnx, onnxscript,
onnxruntime); imported lazily, so the rest of the package does not depend on them.

Limits: fixed spatial size (export once per tile size; pad smaller tiles and pass their mask); detection
outputs only (no SR image, saliency or kept-token maps); fp32; the Triton kernel is not exported (ONNX has no
such op: the ``grid_sample`` path is used). One op needs a translation of our own: the stable sort of the
token selection maps to ONNX ``TopK`` over the whole axis, which breaks ties by the lower index, i.e. stably.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..modeling.constants import PIXEL_MEAN, PIXEL_STD
from ..modeling.ops import get_msda_backend, set_msda_backend

logger = logging.getLogger(__name__)

__all__ = [
    "OnnxDetector",
    "export_onnx",
    "onnx_session",
    "run_onnx",
    "compare_outputs",
    "latency_ms",
    "OUTPUT_NAMES",
    "INPUT_NAMES",
]

INPUT_NAMES = ("images", "pixel_mask")
OUTPUT_NAMES = ("boxes", "scores", "labels")
DEFAULT_OPSET = 18


class OnnxDetector(nn.Module):
    """The deployable graph: normalisation + ``forward_padded`` detections.

    Args:
        model: an eval :class:`~sdconet.modeling.SDCoNet`.
        pixel_mean, pixel_std: RGB normalisation (0-255 scale) the model was trained with.

    Forward:
        images: (B, 3, H, W) float32 RGB on the 0-255 scale, H and W the export size.
        pixel_mask: (B, H, W) bool, True = padding (bottom/right; padded pixels may hold any value).
    Returns:
        ``boxes (B, k, 4)`` x1y1x2y2 normalised to each image's valid region, ``scores (B, k)``,
        ``labels (B, k)`` int64, sorted by score (k = the model's ``topk_test``).
    """

    def __init__(
        self,
        model: nn.Module,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)

    def forward(self, images: torch.Tensor, pixel_mask: torch.Tensor):
        x = (images - self.mean) / self.std
        x = x.masked_fill(pixel_mask[:, None], 0.0)  # padding = the mean colour, as in training
        out = self.model.forward_padded(x, pixel_mask, check_values=False)
        return out["boxes"], out["scores"], out["labels"]


def _stable_sort_translation():
    """ONNX translation of ``aten.sort.stable``: TopK over the whole axis (ties -> lower index first)."""
    from onnxscript.function_libs.torch_lib.ops.core import aten_sort

    def sort_stable(self, stable=None, dim: int = -1, descending: bool = False):
        return aten_sort(self, dim, descending)

    return {torch.ops.aten.sort.stable: sort_stable}


@contextlib.contextmanager
def _pytorch_msda():
    previous = get_msda_backend()
    set_msda_backend("pytorch")
    try:
        yield
    finally:
        set_msda_backend(None if previous == "auto" else previous)


def export_onnx(
    detector: OnnxDetector,
    path: str | Path,
    size: Tuple[int, int],
    batch: int = 1,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
) -> Path:
    """Export ``detector`` at spatial ``size`` (H, W) to ``path`` (written atomically).

    Returns:
        the path written.
    Raises:
        ValueError: size not a multiple of the model's ``size_divisibility``.
    """
    h, w = int(size[0]), int(size[1])
    div = detector.model.size_divisibility
    if h % div or w % div:
        raise ValueError(
            f"export_onnx: size {(h, w)} must be a multiple of {div} (the model's size_divisibility)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    detector = detector.eval().float().cpu()
    if dynamic_batch:
        batch = max(batch, 2)  # torch.export specialises a dimension whose example size is 1
    images = torch.full((batch, 3, h, w), 127.0)
    mask = torch.zeros(batch, h, w, dtype=torch.bool)
    dynamic_shapes = None
    if dynamic_batch:
        dim = torch.export.Dim("batch", min=1, max=1024)
        dynamic_shapes = {"images": {0: dim}, "pixel_mask": {0: dim}}
    tmp = path.with_name(path.name + ".tmp")
    with _pytorch_msda(), torch.no_grad():
        program = torch.onnx.export(
            detector,
            (images, mask),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            optimize=optimize,
            custom_translation_table=_stable_sort_translation(),
            verbose=False,
        )
    program.save(str(tmp))
    tmp.replace(path)
    return path


def onnx_session(path: str | Path, threads: Optional[int] = None):
    """An onnxruntime CPU session (``threads`` intra-op threads; default: torch's thread count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, images: np.ndarray, pixel_mask: np.ndarray) -> Dict[str, np.ndarray]:
    """Run the exported graph; inputs as :class:`OnnxDetector` takes them (float32 0-255, bool mask)."""
    outs = session.run(
        list(OUTPUT_NAMES),
        {
            "images": np.ascontiguousarray(images, np.float32),
            "pixel_mask": np.ascontiguousarray(pixel_mask, bool),
        },
    )
    return dict(zip(OUTPUT_NAMES, outs))


def compare_outputs(
    ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray], top: int = 10, tie_tol: float = 1e-5
) -> Dict[str, float]:
    """Max abs difference of boxes and scores, and label agreement (all k, top-1, the first ``top``).

    Both outputs are sorted by score. Two detections whose scores differ by less than the runtimes' rounding may come
    out in either order, so a box is compared with the closest box of the same label among the reference
    detections whose score is within ``tie_tol`` of its own. Away from ties that is the box at the same position.
    ``max_abs_boxes_by_position`` is the plain position-wise difference, for reference.
    """
    labels_o, labels_r = ours["labels"], ref["labels"]
    boxes_o, boxes_r = ours["boxes"], ref["boxes"]
    scores_o, scores_r = ours["scores"], ref["scores"]
    # (B, k, k): box i of ours against box j of the reference, candidates = same label and a tied score
    diff = np.abs(boxes_o[:, :, None, :] - boxes_r[:, None, :, :]).max(-1)
    cand = (labels_o[:, :, None] == labels_r[:, None, :]) & (
        np.abs(scores_o[:, :, None] - scores_r[:, None, :]) <= tie_tol
    )
    k = boxes_o.shape[1]
    cand |= np.eye(k, dtype=bool)[None]  # the same position is always a candidate
    matched = np.where(cand, diff, np.inf).min(-1)
    return {
        "max_abs_boxes": float(matched.max()) if matched.size else 0.0,
        "max_abs_boxes_by_position": float(np.abs(boxes_o - boxes_r).max()) if boxes_o.size else 0.0,
        "max_abs_scores": float(np.abs(scores_o - scores_r).max()) if scores_o.size else 0.0,
        "labels_equal": float((labels_o == labels_r).mean()),
        "top1_labels_equal": float((labels_o[:, 0] == labels_r[:, 0]).mean()),
        f"top{top}_labels_identical": float((labels_o[:, :top] == labels_r[:, :top]).all(1).mean()),
    }


def latency_ms(calls: Dict[str, callable], runs: int = 10, warmup: int = 2) -> Dict[str, List[float]]:
    """Per-call wall times (ms) of several callables, interleaved round-robin after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times
