"""Config reading without detectron2 and checkpoint loading (detectron2 file, plain state dict, mismatches)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sdconet.config_io import inference_settings_from_dict, load_yaml_config, sdconet_config_from_dict
from sdconet.inference.checkpoint import (
    CheckpointMismatchError,
    infer_num_classes,
    read_checkpoint,
)
from sdconet.inference.predictor import Predictor
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

torch.set_num_threads(2)

CONFIGS = Path(__file__).resolve().parents[1] / "projects" / "SDCoNet" / "configs"
QUICK = CONFIGS / "quick_synthetic.yaml"


# ----------------------------------------------------------------------------------------------------- config io
def test_yaml_base_chain_is_resolved(tmp_path):
    cfg = load_yaml_config(QUICK)
    assert "_BASE_" not in cfg
    assert cfg["MODEL"]["SWIN"]["EMBED_DIM"] == 24  # the child's value
    assert cfg["MODEL"]["SDCONET"]["SALIENCY"]["FILTER_MODE"] == "joint"  # from Base-SDCoNet.yaml
    assert cfg["MODEL"]["PIXEL_MEAN"] == [123.675, 116.28, 103.53]
    # A chain of two, with a relative path from another folder, and the child overriding one nested key.
    child = tmp_path / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text(
        yaml.safe_dump({"_BASE_": str(QUICK), "MODEL": {"SDCONET": {"SALIENCY": {"ALPHA_MODE": "fixed"}}}})
    )
    grandchild = tmp_path / "g.yaml"
    grandchild.write_text("_BASE_: sub/child.yaml\nMODEL:\n  SDCONET:\n    NUM_CLASSES: 3\n")
    g = load_yaml_config(grandchild)
    assert g["MODEL"]["SDCONET"]["SALIENCY"] == {**cfg["MODEL"]["SDCONET"]["SALIENCY"], "ALPHA_MODE": "fixed"}
    assert g["MODEL"]["SDCONET"]["NUM_CLASSES"] == 3 and g["MODEL"]["SWIN"]["EMBED_DIM"] == 24
    loop = tmp_path / "loop.yaml"
    loop.write_text("_BASE_: loop.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_yaml_config(loop)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_yaml_config(tmp_path / "missing.yaml")


def test_dict_to_core_config_and_defaults():
    cfg = load_yaml_config(QUICK)
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        sdconet_config_from_dict(cfg)  # 0 = from the training set
    core = sdconet_config_from_dict(cfg, num_classes=3)
    tiny = SDCoNetConfig.tiny(num_classes=3)
    for name in (
        "hidden_dim",
        "nheads",
        "num_points",
        "enc_layers",
        "dec_layers",
        "num_queries",
        "layer_ratios",
    ):
        assert getattr(core, name) == getattr(tiny, name), name
    assert core.swin == tiny.swin and core.sr == tiny.sr
    assert core.topk_test == 100  # TEST.DETECTIONS_PER_IMAGE
    assert sdconet_config_from_dict({}) == SDCoNetConfig()  # every key missing -> the defaults
    settings = inference_settings_from_dict(cfg)
    assert settings.train_datasets == ("sdconet_synthetic_train",)  # the yaml string "(...,)" is decoded
    assert settings.default_mode == "hr"
    assert inference_settings_from_dict({"INPUT": {"LR_MODE": "real"}}).default_mode == "native"
    with pytest.raises(ValueError, match="FORMAT"):
        inference_settings_from_dict({"INPUT": {"FORMAT": "BGR"}})


def test_same_core_config_as_the_detectron2_adapter():
    pytest.importorskip("detectron2")
    from sdconet.d2.config import get_sdconet_cfg, sdconet_config_from_cfg

    for name in ("quick_synthetic.yaml", "sdconet_swinT_x2_dota15.yaml"):
        cfg = get_sdconet_cfg()
        cfg.merge_from_file(str(CONFIGS / name))
        if cfg.MODEL.SDCONET.NUM_CLASSES == 0:
            cfg.MODEL.SDCONET.NUM_CLASSES = 3
        want = sdconet_config_from_cfg(cfg)
        assert sdconet_config_from_dict(cfg) == want  # a CfgNode works as input
        assert sdconet_config_from_dict(load_yaml_config(CONFIGS / name), num_classes=3) == want


# ----------------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_sdconet(SDCoNetConfig.tiny(num_classes=3)).eval()


def write_config(path, **sdconet):
    path.write_text(yaml.safe_dump({"_BASE_": str(QUICK), "MODEL": {"SDCONET": sdconet}}))
    return path


def test_detectron2_checkpoint_loads_and_predicts_like_the_source_model(tmp_path, tiny_model):
    ckpt = tmp_path / "model_final.pth"
    state = {f"core.{k}": v for k, v in tiny_model.state_dict().items()}
    torch.save({"model": state, "trainer": {"iteration": 9, "hooks": {}}, "iteration": 9}, ckpt)
    loaded = read_checkpoint(ckpt)
    assert loaded.format == "detectron2" and loaded.meta == {"iteration": 9}
    assert set(loaded.state_dict) == set(tiny_model.state_dict())
    assert infer_num_classes(loaded.state_dict) == 3
    # NUM_CLASSES 0 in the config: taken from the checkpoint; class names from the config's dataset.
    pred = Predictor.from_files(QUICK, ckpt, batch_size=2)
    assert pred.class_names == ["vehicle", "plane", "tank"]
    assert pred.sr_scale == 2 and pred.has_sr
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(pred.model.state_dict()[k], v), k
    img = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    got = pred.predict([img], return_sr=True, return_saliency=True, return_kept=True)[0]
    norm = (torch.from_numpy(img).permute(2, 0, 1).float() - pred.mean[0]) / pred.std[0]
    with torch.no_grad():
        ref = tiny_model(norm[None])[0]
    k = len(ref["scores"])  # the config keeps top-100 (TEST.DETECTIONS_PER_IMAGE), tiny() top-50
    assert len(got["scores"]) == 100 and k == 50
    np.testing.assert_allclose(got["boxes"][:k], ref["boxes"].numpy() * [80, 64, 80, 64], atol=1e-3)
    np.testing.assert_allclose(got["scores"][:k], ref["scores"].numpy(), atol=1e-5)
    assert got["sr"].shape == (128, 160, 3) and got["sr"].dtype == np.uint8
    assert [m.shape for m in got["saliency"]] == [(8, 10), (4, 5), (2, 3), (1, 2)]
    assert len(got["kept"]) == 2 and got["kept"][0][0].dtype == bool


def test_plain_and_ddp_state_dicts_and_bf16(tmp_path, tiny_model):
    plain = tmp_path / "plain.pth"
    torch.save(tiny_model.state_dict(), plain)
    ddp = tmp_path / "ddp.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in tiny_model.state_dict().items()}, "epoch": 2}, ddp
    )
    wrapped = read_checkpoint(ddp)
    assert wrapped.format == "wrapped_state_dict" and wrapped.meta == {"epoch": 2}
    assert wrapped.state_dict.keys() == tiny_model.state_dict().keys()
    assert all(torch.equal(wrapped.state_dict[k], v) for k, v in tiny_model.state_dict().items())
    cfg = write_config(tmp_path / "cfg.yaml", NUM_CLASSES=3)
    pred = Predictor.from_files(cfg, plain, class_names=["x", "y", "z"])
    assert pred.class_names == ["x", "y", "z"] and pred.config.num_classes == 3
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    a = pred.predict([img])[0]
    pred.precision = "bf16"
    c = pred.predict([img])[0]
    assert c["boxes"].dtype == np.float32 and c["boxes"].shape == a["boxes"].shape
    assert not np.array_equal(c["boxes"], a["boxes"])  # autocast really ran in bf16 ...
    np.testing.assert_allclose(c["scores"], a["scores"], atol=0.03)  # ... with nearly the same scores
    with pytest.raises(ValueError, match="precision"):
        Predictor(tiny_model, precision="fp16")


def test_mismatched_checkpoint_names_the_keys(tmp_path, tiny_model):
    ckpt = tmp_path / "m.pth"
    torch.save({"model": {f"core.{k}": v for k, v in tiny_model.state_dict().items()}}, ckpt)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"detector\.enc_class_head\.weight \(checkpoint \(3, 64\) vs "
        r"model \(5, 64\)\)",
    ):
        Predictor.from_files(write_config(tmp_path / "five.yaml", NUM_CLASSES=5), ckpt)
    # (the SR branch's tensors are an allowed partial load for inference: the saliency ones are still named)
    with pytest.raises(CheckpointMismatchError, match=r"13 not in the model: detector\.encoder\.background"):
        Predictor.from_files(write_config(tmp_path / "dino.yaml", NUM_CLASSES=3, VARIANT="dino"), ckpt)
    partial = tmp_path / "partial.pth"
    state = tiny_model.state_dict()
    state.pop("detector.tgt_embed.weight")
    torch.save(state, partial)
    with pytest.raises(
        CheckpointMismatchError, match=r"1 missing from the checkpoint: detector\.tgt_embed\.weight"
    ):
        Predictor.from_files(write_config(tmp_path / "three.yaml", NUM_CLASSES=3), partial)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        read_checkpoint(junk)
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="holds no model weights"):
        read_checkpoint(tmp_path / "empty.pth")
