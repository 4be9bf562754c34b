"""Eval outputs of every variant equal the golden file saved before the sync-free refactor.

The golden file (``tests/golden/eval_outputs.pt``) was written by ``tests/golden/make_golden_eval.py`` from main at
d1aff2a on a padded mixed-size batch (tiny config). Kept-token indices and labels must be identical, boxes,
scores, saliency maps and SR pixels within 1e-5.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_SPEC = importlib.util.spec_from_file_location(
    "make_golden_eval", Path(__file__).parent / "golden" / "make_golden_eval.py"
)
golden_mod = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(golden_mod)

TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return torch.load(golden_mod.GOLDEN_PATH, weights_only=True)


def _close(a, b, what):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != golden {tuple(b.shape)}"
    err = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    assert err <= TOL, f"{what}: max abs difference {err:.2e} > {TOL}"


@pytest.mark.parametrize("case", list(golden_mod.CASES))
def test_eval_outputs_equal_golden(golden, case):
    torch.set_num_threads(2)
    ref = golden[case]
    got = golden_mod.run_case(golden_mod.build(case))
    assert sorted(got) == sorted(ref), "recorded outputs differ"
    for b in range(len(ref["labels"])):
        assert torch.equal(got["labels"][b], ref["labels"][b]), f"{case}: labels of image {b}"
        _close(got["boxes"][b], ref["boxes"][b], f"{case}: boxes of image {b}")
        _close(got["scores"][b], ref["scores"][b], f"{case}: scores of image {b}")
    assert len(got["kept_indices"]) == len(ref["kept_indices"])
    for layer, (g_rows, r_rows) in enumerate(zip(got["kept_indices"], ref["kept_indices"])):
        for b, (g, r) in enumerate(zip(g_rows, r_rows)):
            assert torch.equal(g, r), f"{case}: kept-token indices of layer {layer}, image {b}"
    assert abs(float(got["kept_ratio"]) - float(ref["kept_ratio"])) < 1e-9
    for b, maps in enumerate(ref.get("saliency", [])):
        for lvl, m in enumerate(maps):
            _close(got["saliency"][b][lvl], m, f"{case}: saliency of image {b}, level {lvl}")
    for b, layers in enumerate(ref.get("kept_maps", [])):
        for i, maps in enumerate(layers):
            for lvl, m in enumerate(maps):
                assert torch.equal(got["kept_maps"][b][i][lvl], m), f"{case}: kept map {b}/{i}/{lvl}"
    for b in range(len(ref.get("sr_sub", []))):
        assert torch.equal(got["sr_shape"][b], ref["sr_shape"][b])
        _close(got["sr_sub"][b], ref["sr_sub"][b], f"{case}: SR pixels of image {b}")
        assert abs(float(got["sr_sum"][b] - ref["sr_sum"][b])) < 1e-2


def test_golden_batch_is_padded_and_mixed():
    images, mask = golden_mod.make_batch()
    assert len({tuple(s) for s in golden_mod.VALID_SIZES}) == len(golden_mod.VALID_SIZES)
    assert any(c % 32 for c in images.shape[-2:])  # the model pads the canvas itself
    assert mask[1:].any() and not mask[0].any()
