"""sdconet.inference: whole-scene (sliced) prediction with a trained SDCoNet, framework-free.

:class:`Predictor` (checkpoint + config -> batched predictions on 8-bit RGB tiles), :class:`SceneRunner` (the
whole-scene loop over many scenes: sources, tiling, batching, per-scene merge), :func:`predict_scene` (one in-memory
scene), merging options, COCO results, scene-level evaluation and the pictures. Names are imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Predictor": "predictor",
    "predict_scene": "scene",
    "SceneDetections": "accumulator",
    "RawTileDetections": "accumulator",
    "merge_raw": "accumulator",
    "SceneRunner": "runner",
    "SceneResult": "runner",
    "SceneFailure": "runner",
    "TilingOptions": "tiling",
    "SceneInput": "sources",
    "ImageSource": "sources",
    "ArraySource": "sources",
    "open_scene": "sources",
    "ExitCode": "run_policy",
    "MergeOptions": "merge",
    "merge_detections": "merge",
    "CheckpointMismatchError": "checkpoint",
    "read_checkpoint": "checkpoint",
    "detections_to_coco": "coco_results",
    "evaluate_scenes": "scene_eval",
    "draw_detections": "visualize",
    "saliency_figure": "visualize",
    "sr_figure": "visualize",
    "kept_tokens_figure": "visualize",
    "make_synthetic_scene": "synthetic_scene",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
