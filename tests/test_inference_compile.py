"""Predictor(compile=...) and the whole-scene loop: one compiled graph for every tile of every scene (CPU).

The compiled predictor runs ``torch.compile(model.forward_padded, fullgraph=True)``; with the runner's fixed-shape
batches (edge tiles padded, the last batch filled with dummy tiles) it compiles exactly once, and its detections
equal the eager predictor's. ``aot_eager`` keeps the test fast (inductor's C++ code generation takes minutes).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sdconet.inference.predictor import Predictor
from sdconet.inference.runner import SceneResult, SceneRunner
from sdconet.inference.sources import ArraySource
from sdconet.inference.synthetic_scene import make_synthetic_scene
from sdconet.inference.tiling import TilingOptions
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

_SPEC = importlib.util.spec_from_file_location(
    "golden", Path(__file__).parent / "golden" / "make_golden_eval.py"
)
golden = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(golden)

# native mode, s = 2: 64-px LR tiles with 16 px overlap; a 150 x 110 scene gives 6 tiles, edge tiles smaller
TILING = TilingOptions(mode="native", tile_size=128, overlap=32)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    m = build_sdconet(SDCoNetConfig.tiny(num_classes=3))
    golden.deterministic_init(m)
    return m.eval()


def _run(predictor, image):
    runner = SceneRunner(predictor, TILING, score_thresh=0.0, fixed_shape=True, prefetch=0)
    (event,) = list(runner.run([ArraySource(image, key="scene")]))
    assert isinstance(event, SceneResult), getattr(event, "message", event)
    return event.detections


def test_compiled_predictor_compiles_once_per_shape_and_matches_eager(model):
    image = make_synthetic_scene(150, 110, seed=4).image
    eager = Predictor(model, batch_size=4)
    compiled = Predictor(model, batch_size=4, compile=True, compile_backend="aot_eager")
    assert eager.compile_mode is None and compiled.compile_mode == "default"  # CPU: inductor's default mode
    ref = _run(eager, image)
    got = _run(compiled, image)
    # 6 tiles = one full batch + one batch of 2 real and 2 dummy tiles, all 64 x 64: one compilation
    assert [c["shape"] for c in compiled.compile_log] == [[4, 3, 64, 64]]
    assert len(ref) > 0 and len(got) == len(ref)
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-2)  # scene pixels
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)

    # A different batch shape compiles a second graph (and is logged); extras come back cropped on the host.
    tile = image[:40, :50]
    (res,) = compiled.predict([tile], return_saliency=True, return_kept=True)
    (ref_res,) = eager.predict([tile], return_saliency=True, return_kept=True)
    assert len(compiled.compile_log) == 2 and compiled.compile_log[1]["extras"] == [
        "return_kept",
        "return_saliency",
    ]
    assert (
        [m.shape for m in res["saliency"]]
        == [m.shape for m in ref_res["saliency"]]
        == [(5, 7), (3, 4), (2, 2), (1, 1)]
    )
    for a, b in zip(res["kept"], ref_res["kept"]):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    np.testing.assert_allclose(res["boxes"], ref_res["boxes"], atol=1e-2)


def test_compile_argument_is_checked(model):
    with pytest.raises(ValueError, match="compile must be"):
        Predictor(model, compile="fastest")
    assert Predictor(model, compile="off").compile_mode is None
