"""ONNX export of the inference path (tools/export.py) and its parity through onnxruntime (tiny config, CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

_GOLDEN = importlib.util.spec_from_file_location(
    "golden", Path(__file__).parent / "golden" / "make_golden_eval.py"
)
golden = importlib.util.module_from_spec(_GOLDEN)
_GOLDEN.loader.exec_module(golden)

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "projects" / "SDCoNet" / "configs" / "quick_synthetic.yaml"


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_tool_onnxruntime_parity(tmp_path, capsys):
    """Export the quick config's tiny SDCoNet (joint filtering) with a dynamic batch; check it on padded tiles."""
    torch.set_num_threads(2)
    from sdconet.modeling.build import build_sdconet
    from sdconet.modeling.config import SDCoNetConfig

    model = build_sdconet(SDCoNetConfig.tiny(num_classes=3))
    golden.deterministic_init(model)  # non-degenerate weights: distinct scores, a real token selection
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": {f"core.{k}": v for k, v in model.state_dict().items()}, "iteration": 1}, ckpt)
    out = tmp_path / "exported" / "tiny.onnx"
    tool = load_tool("export")
    args = ["--config-file", str(QUICK), "--weights", str(ckpt), "--format", "onnx", "--size", "64"]
    args += ["--output", str(out), "--check-tiles", "3", "--runs", "2", "--tolerance", "1e-4"]
    args += ["--no-optimize"]  # onnxscript's optimiser costs ~20 s of CI time; onnxruntime optimises anyway
    assert tool.main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "parity on 3 synthetic scene tiles" in printed and "onnxruntime" in printed
    summary = json.loads(out.with_suffix(".json").read_text())
    check = summary["check"]
    assert check["ok"] and check["max_abs_boxes"] <= 1e-4 and check["max_abs_scores"] <= 1e-4
    assert check["top1_labels_equal"] == 1.0 and check["top10_labels_identical"] == 1.0
    assert summary["dynamic_batch"] and summary["latency_ms_batch1"]["onnxruntime"] > 0

    # The batch dimension is dynamic: the same file runs batch 1 and batch 2, one image padded.
    from sdconet.inference.export import OnnxDetector, onnx_session, run_onnx
    from sdconet.inference.predictor import Predictor

    session = onnx_session(out, threads=2)
    predictor = Predictor.from_files(
        QUICK, ckpt
    )  # the model as the tool built it (the config's top-k, mean, std)
    model = predictor.model
    detector = OnnxDetector(model, predictor.mean.flatten().tolist(), predictor.std.flatten().tolist()).eval()
    g = torch.Generator().manual_seed(3)
    images = (torch.rand(2, 3, 64, 64, generator=g) * 255).numpy()
    mask = np.zeros((2, 64, 64), bool)
    mask[1, 40:, :] = True
    mask[1, :, 50:] = True
    images[1][:, mask[1]] = 1e4  # padded pixels may hold anything: the graph masks them
    for b in (1, 2):
        got = run_onnx(session, images[:b], mask[:b])
        with torch.no_grad():
            ref = detector(torch.from_numpy(images[:b]), torch.from_numpy(mask[:b]))
        assert got["boxes"].shape == (b, model.topk_test, 4)
        np.testing.assert_allclose(got["boxes"], ref[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(got["scores"], ref[1].numpy(), atol=1e-4)
        assert (got["labels"][:, :10] == ref[2].numpy()[:, :10]).all()


def test_export_rejects_bad_size(tmp_path, capsys):
    torch.manual_seed(0)
    from sdconet.modeling.build import build_sdconet
    from sdconet.modeling.config import SDCoNetConfig

    ckpt = tmp_path / "m.pth"
    model = build_sdconet(SDCoNetConfig.tiny(num_classes=3))
    torch.save({"model": {f"core.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    tool = load_tool("export")
    assert tool.main(["--config-file", str(QUICK), "--weights", str(ckpt), "--size", "70"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_parity_compares_tied_detections_in_either_order():
    """Two detections with tied scores may swap between runtimes: the same boxes, not a parity failure."""
    from sdconet.inference.export import compare_outputs

    boxes = np.array([[[0.1, 0.1, 0.2, 0.2], [0.6, 0.6, 0.9, 0.9], [0.3, 0.3, 0.4, 0.4]]], dtype=np.float32)
    ref = {"boxes": boxes, "scores": np.array([[0.9, 0.5, 0.5]]), "labels": np.array([[1, 2, 2]])}
    swapped = {
        "boxes": boxes[:, [0, 2, 1]],
        "scores": np.array([[0.9, 0.5 + 1e-7, 0.5]]),
        "labels": np.array([[1, 2, 2]]),
    }
    out = compare_outputs(swapped, ref)
    assert out["max_abs_boxes"] < 1e-6 and out["max_abs_boxes_by_position"] > 0.2
    moved = {**ref, "boxes": boxes + np.float32(0.01)}  # a real difference is still found
    assert abs(compare_outputs(moved, ref)["max_abs_boxes"] - 0.01) < 1e-6
    other_label = {**swapped, "labels": np.array([[1, 2, 0]])}  # a tie of another label is no excuse
    assert compare_outputs(other_label, ref)["max_abs_boxes"] > 0.2
