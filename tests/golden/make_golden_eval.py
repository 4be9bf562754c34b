"""Golden eval outputs of every model variant on a padded mixed-size batch (tiny config, CPU).

``python tests/golden/make_golden_eval.py`` writes ``tests/golden/eval_outputs.pt`` from the code checked out;
``tests/test_golden_eval.py`` compares the current code against that file: kept-token indices identical, boxes
within 1e-5, labels identical. The file was written from main at d1aff2a (before the sync-free eval path), so the
test pins the eval behaviour of every variant across refactors. Regenerate it only for an intended change of the
model's outputs, and say so in the commit.

Weights are set per parameter from a generator seeded by the parameter's name (not by construction order), so
adding a parameter elsewhere in the model does not change the others.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Dict, List

import torch
from torch import nn

from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

GOLDEN_PATH = Path(__file__).with_name("eval_outputs.pt")

#: name -> SDCoNetConfig.tiny() changes. Every variant and filter mode, plus the official propagation/values.
CASES: Dict[str, dict] = {
    "dino": {"variant": "dino"},
    "dino_saliency": {"variant": "dino_saliency"},
    "dino_sr": {"variant": "dino_sr"},
    "sdconet_joint": {"variant": "sdconet", "filter_mode": "joint"},
    "sdconet_layer": {"variant": "sdconet", "filter_mode": "layer"},
    "sdconet_level": {"variant": "sdconet", "filter_mode": "level"},
    "sdconet_none": {"variant": "sdconet", "filter_mode": "none"},
    "sdconet_official": {
        "variant": "sdconet",
        "saliency_propagation": "official",
        "value_mode": "initial",
        "alpha_mode": "fixed",
    },
    "serial": {"variant": "serial"},
}

#: Canvas (not a multiple of 32: the model pads it) and the valid (h, w) of each image (padding bottom/right).
CANVAS = (62, 90)
VALID_SIZES = [(62, 90), (41, 70), (23, 37)]
#: Subsampling stride of the stored SR images (the full images would make the file too large).
SR_STRIDE = 7


def deterministic_init(model: nn.Module) -> None:
    """Non-degenerate weights that depend only on each parameter's name and shape."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() >= 2:
                value = noise / (p[0].numel() ** 0.5)
            elif name.endswith("alpha"):
                value = 0.5 + 0.1 * noise
            elif "norm" in name and name.endswith("weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
            p.copy_(value.to(p.dtype))


def build(case: str) -> nn.Module:
    # the golden file was written with the tiny config of that time (2 decoder layers; tiny() has 3 since)
    model = build_sdconet(SDCoNetConfig.tiny(**{"dec_layers": 2, **CASES[case]}))
    deterministic_init(model)
    return model.eval()


def make_batch():
    """(B, 3, H, W) normalised images and the (B, H, W) padding mask (True = padding)."""
    g = torch.Generator().manual_seed(20240613)
    images = torch.zeros(len(VALID_SIZES), 3, *CANVAS)
    mask = torch.ones(len(VALID_SIZES), *CANVAS, dtype=torch.bool)
    for i, (h, w) in enumerate(VALID_SIZES):
        images[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        mask[i, :h, :w] = False
    return images, mask


def kept_token_lists(model: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> List[List[torch.Tensor]]:
    """Per encoder layer, per image: the indices of the tokens the layer updates, in selection (score) order.

    Recorded from the encoder's ``selections`` argument; empty without token filtering.
    """
    recorded: List = []

    def hook(module, args, kwargs):
        selections = args[6] if len(args) > 6 else kwargs.get("selections")
        recorded.append(selections)

    handle = model.detector.encoder.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(images, mask)
    finally:
        handle.remove()
    selections = recorded[0]
    if selections is None:
        return []
    out = []
    for sel in selections:
        out.append(selection_rows(sel))
    return out


def selection_rows(sel) -> List[torch.Tensor]:
    """One layer's selection -> per image the real indices in order (works for ``(indices, counts)``)."""
    index, counts = sel[0], sel[1]
    if counts.dim() == 1:  # counts per image: the first counts[b] entries are real
        return [index[b, : int(counts[b])].clone() for b in range(index.shape[0])]
    # a rank mask (B, N): the entries where it is True are real, in order
    return [index[b][counts[b]].clone() for b in range(index.shape[0])]


def run_case(model: nn.Module) -> dict:
    images, mask = make_batch()
    with torch.no_grad():
        out = model(images, mask, return_sr=True, return_saliency=True, return_kept=True)
    rec = {
        "boxes": [r["boxes"].clone() for r in out],
        "scores": [r["scores"].clone() for r in out],
        "labels": [r["labels"].clone() for r in out],
        "kept_ratio": torch.tensor(float(model.last_stats["kept_token_ratio"]), dtype=torch.float64),
        "kept_indices": kept_token_lists(model, images, mask),
    }
    if "saliency" in out[0]:
        rec["saliency"] = [[m.clone() for m in r["saliency"]] for r in out]
    if "kept" in out[0]:
        rec["kept_maps"] = [[[m.clone() for m in layer] for layer in r["kept"]] for r in out]
    if "sr" in out[0]:
        rec["sr_shape"] = [torch.tensor(r["sr"].shape) for r in out]
        rec["sr_sub"] = [r["sr"][:, ::SR_STRIDE, ::SR_STRIDE].clone() for r in out]
        rec["sr_sum"] = [r["sr"].double().sum() for r in out]
    return rec


def main() -> int:
    torch.set_num_threads(1)
    golden = {name: run_case(build(name)) for name in CASES}
    torch.save(golden, GOLDEN_PATH)
    print(f"wrote {GOLDEN_PATH} ({GOLDEN_PATH.stat().st_size / 1024:.0f} KiB, {len(golden)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
