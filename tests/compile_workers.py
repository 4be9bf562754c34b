"""Jobs for tests/test_compile_eval.py, run in worker processes (two at a time: CI has two cores).

Each job builds its model, runs one check and returns plain data (no tensors), so a failure message can name
the variant, size and reasons.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

#: Variant name -> SDCoNetConfig.tiny() changes (every variant and every filter mode).
VARIANTS: Dict[str, dict] = {
    "dino": {"variant": "dino"},
    "dino_saliency": {"variant": "dino_saliency"},
    "dino_sr": {"variant": "dino_sr"},
    "sdconet_joint": {"variant": "sdconet", "filter_mode": "joint"},
    "sdconet_layer": {"variant": "sdconet", "filter_mode": "layer"},
    "sdconet_level": {"variant": "sdconet", "filter_mode": "level"},
    "sdconet_none": {"variant": "sdconet", "filter_mode": "none"},
    "serial": {"variant": "serial"},
}
#: Two input sizes: a padded mixed batch (canvas not a multiple of 32) and one unpadded image.
SIZES = {"b2_62x90_padded": (2, 62, 90, [(62, 90), (41, 70)]), "b1_96x64": (1, 96, 64, None)}


def build(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if variant == "full":
        return build_sdconet(SDCoNetConfig()).eval()
    return build_sdconet(SDCoNetConfig.tiny(**VARIANTS[variant])).eval()


def inputs(size: str):
    """(images, pixel_mask or None) for a named size."""
    batch, h, w, valid = SIZES[size] if size in SIZES else (1, int(size), int(size), None)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, h, w, generator=g)
    if valid is None:
        return images, None
    mask = torch.ones(batch, h, w, dtype=torch.bool)
    for i, (vh, vw) in enumerate(valid):
        mask[i, :vh, :vw] = False
        images[i, :, vh:, :] = 0
        images[i, :, :, vw:] = 0
    return images, mask


def explain_job(variant: str, size: str) -> Tuple[int, List[str]]:
    """Graph breaks of the eval forward ``model(images, mask)`` (``torch._dynamo.explain``)."""
    from sdconet.evaluation.graph_audit import graph_breaks

    torch.set_num_threads(1)
    model = build(variant)
    images, mask = inputs(size)
    with torch.no_grad():
        return graph_breaks(model, images, mask)


def compile_job(variant: str) -> Dict[str, float]:
    """``torch.compile(forward_padded, backend="aot_eager", fullgraph=True)`` with every extra vs eager.

    Returns the largest differences (boxes, scores, saliency, SR) and the number of label / kept-token
    mismatches; raises if the compile fails (e.g. a graph break under ``fullgraph=True``).
    """
    torch.set_num_threads(1)
    torch._dynamo.reset()
    model = build(variant)
    images, mask = inputs("b2_62x90_padded")
    kwargs = dict(return_sr=model.has_sr, return_saliency=True, return_kept=True)
    with torch.no_grad():
        eager = model.forward_padded(images, mask, **kwargs)
        compiled_fn = torch.compile(model.forward_padded, backend="aot_eager", fullgraph=True)
        got = compiled_fn(images, mask, **kwargs)
        per_image = model.unbatch(got)
        reference = model(images, mask, **kwargs)

    def diff(a, b):
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0

    out = {
        "boxes": diff(got["boxes"], eager["boxes"]),
        "scores": diff(got["scores"], eager["scores"]),
        "label_mismatches": int((got["labels"] != eager["labels"]).sum()),
        "keys_equal": float(sorted(got) == sorted(eager)),
        "kept_mismatches": sum(
            int((a != b).sum()) for a, b in zip(got.get("kept", []), eager.get("kept", []))
        ),
        "saliency": max(
            [diff(a, b) for a, b in zip(got.get("saliency", []), eager.get("saliency", []))] or [0.0]
        ),
        "sr": diff(got["sr"], eager["sr"]) if "sr" in got else 0.0,
        "per_image_boxes": max(diff(a["boxes"], b["boxes"]) for a, b in zip(per_image, reference)),
        "per_image_extras_equal": float(
            all(
                [m.shape for m in a.get("saliency", [])] == [m.shape for m in b.get("saliency", [])]
                and len(a.get("kept", [])) == len(b.get("kept", []))
                and (("sr" in a) == ("sr" in b))
                for a, b in zip(per_image, reference)
            )
        ),
    }
    return out
