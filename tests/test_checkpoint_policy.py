"""Class 5 of issue 12: broken or mismatched weights never produce a "successful" run.

NaN / Inf weights are an error at load everywhere (predict, the detectron2 checkpointer, ImageNet Swin weights);
train_net.py --eval-only and --resume are as strict as predict.py; partial loads happen only through the explicit
allow-list (class heads for fine-tuning, the SR branch into its detector, ImageNet backbone weights); a truncated
checkpoint is one error line with its path.
"""

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdconet.engine.checkpoint_policy import (
    CheckpointMismatchError,
    NonFiniteWeightsError,
    plan_load,
)
from sdconet.inference.checkpoint import load_state_into, read_checkpoint
from sdconet.modeling.backbone import load_swin_weights
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "projects" / "SDCoNet" / "configs" / "quick_synthetic.yaml"


def tiny(num_classes=3, variant="sdconet"):
    torch.manual_seed(0)
    return build_sdconet(SDCoNetConfig.tiny(num_classes=num_classes, variant=variant))


def d2_checkpoint(path, model, poison=None):
    state = {f"core.{k}": v.clone() for k, v in model.state_dict().items()}
    if poison:
        for k in state:
            if state[k].is_floating_point():
                state[k].fill_(poison)
    torch.save({"model": state, "iteration": 7}, path)
    return path


def test_strict_by_default_and_partial_loads_only_by_rule():
    three, five, dino = tiny(3).state_dict(), tiny(5).state_dict(), tiny(3, "dino_saliency").state_dict()
    # class-dependent tensors: weight + bias of each decoder layer's class head and of the encoder's, the DN labels
    n_cls = 2 * SDCoNetConfig.tiny().dec_layers + 2 + 1
    with pytest.raises(CheckpointMismatchError, match=f"{n_cls} with different shapes: detector.class_heads.0.bias"):
        plan_load(five, three, "ft.pth")
    plan = plan_load(five, three, "ft.pth", allow=("class_heads",))
    assert sorted(plan.applied) == ["class_heads"] and len(plan.applied["class_heads"]) == n_cls
    assert (
        "detector.enc_class_head.weight" in plan.kept and "detector.enc_class_head.weight" not in plan.state
    )
    with pytest.raises(CheckpointMismatchError, match=r"not in the model: sr_decoder\."):
        plan_load(dino, three, "sdconet.pth")
    plan = plan_load(dino, three, "sdconet.pth", allow=("sr_branch",))
    assert plan.applied["sr_branch"] and all(k.startswith("sr_decoder.") for k in plan.applied["sr_branch"])
    # A rule never covers more than its keys: a wrong width is still an error, naming the rules that were allowed.
    wide = {
        k: (torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k == "encoder.patch_embed.proj.bias" else v)
        for k, v in three.items()
    }
    with pytest.raises(CheckpointMismatchError, match=r"partial loads allowed here: class_heads, sr_branch"):
        plan_load(three, wide, "x.pth", allow=("class_heads", "sr_branch"))


def test_predict_refuses_nan_weights_and_names_the_file(tmp_path, capsys):
    ckpt = d2_checkpoint(tmp_path / "diverged.pth", tiny(), poison=float("nan"))
    with pytest.raises(
        NonFiniteWeightsError, match=r"diverged.pth' holds NaN/Inf values in \d+ of \d+ tensors"
    ):
        load_state_into(tiny(), read_checkpoint(ckpt).state_dict, str(ckpt))
    from sdconet.data.image_io import write_image
    from sdconet.inference.synthetic_scene import make_synthetic_scene

    write_image(tmp_path / "scenes" / "a.png", make_synthetic_scene(128, 128, seed=0).image)
    spec = importlib.util.spec_from_file_location("tool_predict", ROOT / "tools" / "predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    args = ["--config-file", str(QUICK), "--weights", str(ckpt), "--input", str(tmp_path / "scenes")]
    assert (
        predict.main(args + ["--output", str(tmp_path / "out"), "--quiet"]) == 2
    )  # was: exit 0, no detections
    assert "diverged.pth" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()


def test_predict_loads_an_sr_augmented_checkpoint_into_its_detector(tmp_path, caplog):
    ckpt = d2_checkpoint(tmp_path / "sdconet.pth", tiny(3, "sdconet"))
    model = tiny(3, "dino_saliency")
    with caplog.at_level(logging.INFO):
        load_state_into(model, read_checkpoint(ckpt).state_dict, str(ckpt))
    assert any("partial load (sr_branch)" in r.getMessage() for r in caplog.records)
    with pytest.raises(CheckpointMismatchError):  # ... but never into a model with another class count
        load_state_into(tiny(5, "dino_saliency"), read_checkpoint(ckpt).state_dict, str(ckpt))


def test_truncated_checkpoint_is_one_line_with_its_path(tmp_path):
    ckpt = d2_checkpoint(tmp_path / "model_0000099.pth", tiny())
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError) as err:
        read_checkpoint(ckpt)
    assert (
        "model_0000099.pth" in str(err.value) and "truncated" in str(err.value) and "\n" not in str(err.value)
    )


def test_imagenet_swin_weights_with_nan_are_refused(tmp_path):
    enc = tiny().encoder
    state = {
        k: torch.full_like(v, float("inf")) if v.is_floating_point() else v
        for k, v in enc.state_dict().items()
    }
    torch.save({"model": state}, tmp_path / "swin.pth")
    with pytest.raises(NonFiniteWeightsError, match="swin.pth"):
        load_swin_weights(enc, str(tmp_path / "swin.pth"))


# ------------------------------------------------------------------------------------------------------- detectron2
@pytest.fixture(scope="module")
def bl_synth(tmp_path_factory):
    """The tiny dataset of the stock-detector tests (registered under their names)."""
    pytest.importorskip("detectron2")
    from test_d2_baselines import synth

    return synth.__wrapped__(tmp_path_factory)


@pytest.fixture(scope="module")
def d2_cfg(tmp_path_factory):
    pytest.importorskip("detectron2")
    from sdconet.d2 import setup_cfg

    def make(out, *extra):
        opts = ["OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu", "MODEL.SDCONET.NUM_CLASSES", "3", *extra]
        return setup_cfg(str(QUICK), opts, count_images=False)

    return make


def test_d2_checkpointer_policy_by_purpose(d2_cfg, tmp_path, caplog):
    from sdconet.d2 import SDCoNetTrainer
    from sdconet.d2.checkpoint import SDCoNetCheckpointer

    cfg = d2_cfg(tmp_path / "run")
    model = SDCoNetTrainer.build_model(cfg)
    other = d2_checkpoint(tmp_path / "five.pth", tiny(5))
    # --eval-only: a checkpoint that fits only in part is an error naming the keys (was: ~100 warnings, AP, exit 0).
    with pytest.raises(CheckpointMismatchError, match="detector.class_heads"):
        SDCoNetCheckpointer(model, eval_only=True).resume_or_load(str(other), resume=False)
    # MODEL.WEIGHTS for a new run: fine-tuning with another class count re-initialises the class heads, one line.
    with caplog.at_level(logging.INFO):
        SDCoNetCheckpointer(model).resume_or_load(str(other), resume=False)
    lines = [r.getMessage() for r in caplog.records if "partial load" in r.getMessage()]
    n_cls = 2 * cfg.MODEL.SDCONET.DEC_LAYERS + 2 + 1  # class heads per decoder layer + encoder's, DN labels
    assert lines == [
        "partial load (class_heads): fine-tuning with a different class count: "
        f"re-initialised {n_cls} class-dependent tensors"
    ]
    # --resume: the run's own last checkpoint must fit exactly.
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    (out / "last_checkpoint").write_text("five.pth")
    (out / "five.pth").write_bytes(other.read_bytes())
    with pytest.raises(CheckpointMismatchError):
        SDCoNetCheckpointer(model, str(out)).resume_or_load("", resume=True)
    # NaN weights: an error whatever the purpose.
    nan = d2_checkpoint(tmp_path / "nan.pth", tiny(3), poison=float("nan"))
    for kwargs in ({}, {"eval_only": True}):
        with pytest.raises(NonFiniteWeightsError, match="nan.pth"):
            SDCoNetCheckpointer(model, **kwargs).resume_or_load(str(nan), resume=False)
    # A plain core state dict (no "core." prefix) of the right model loads exactly.
    torch.save(tiny(3).state_dict(), tmp_path / "plain.pth")
    SDCoNetCheckpointer(model, eval_only=True).resume_or_load(str(tmp_path / "plain.pth"), resume=False)
    assert torch.equal(model.core.detector.enc_class_head.weight, tiny(3).detector.enc_class_head.weight)


def test_train_net_truncated_checkpoint_is_one_error_line(d2_cfg, tmp_path):
    ckpt = d2_checkpoint(tmp_path / "model_final.pth", tiny())
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    cmd = [sys.executable, str(ROOT / "projects" / "SDCoNet" / "train_net.py"), "--config-file", str(QUICK),
           "--eval-only", "MODEL.WEIGHTS", str(ckpt), "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.SDCONET.NUM_CLASSES", "3"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot load checkpoint") and str(ckpt) in last and "truncated" in last
    assert "Traceback" not in proc.stderr
    json.dumps(last)  # one line


def test_sr_augmented_stock_detector_checkpoint_loads_into_its_stock_detector(bl_synth, tmp_path, caplog):
    from test_d2_baselines import _cfg

    from sdconet.d2 import build_model
    from sdconet.d2.checkpoint import SDCoNetCheckpointer

    name = "cascade_rcnn_R50_FPN_sr_x2_nwpu.yaml"
    torch.manual_seed(0)
    sr_model = build_model(_cfg(name, tmp_path, count_images=False))
    torch.save({"model": sr_model.state_dict()}, tmp_path / "sr.pth")
    stock = build_model(_cfg(name, tmp_path, "MODEL.SR_BRANCH.ENABLED", "False", count_images=False))
    for kwargs in ({"eval_only": True}, {}):
        with caplog.at_level(logging.INFO):
            SDCoNetCheckpointer(stock, **kwargs).resume_or_load(str(tmp_path / "sr.pth"), resume=False)
        assert any("partial load (sr_branch)" in r.getMessage() for r in caplog.records)
        caplog.clear()
    key = next(k for k in stock.state_dict() if k.startswith("backbone."))
    assert torch.equal(stock.state_dict()[key], sr_model.state_dict()[key])
