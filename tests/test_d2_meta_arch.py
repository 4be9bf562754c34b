"""SDCoNet meta-architecture: d2 <-> core translation (padding masks, target frames, output frames, HR batches).

A recording stand-in for the core checks the adapter's exact tensors; the real tiny core is exercised too.
"""

import pytest
import torch
from torch import nn

pytest.importorskip("detectron2")

from detectron2.structures import Boxes, Instances  # noqa: E402

from sdconet.d2 import SDCoNet, get_sdconet_cfg  # noqa: E402
from sdconet.modeling.constants import PIXEL_MEAN, PIXEL_STD  # noqa: E402


class RecordingCore(nn.Module):
    """Follows the core-model contract; records what the adapter passes and returns fixed predictions."""

    size_divisibility = 32
    sr_scale = 2
    has_sr = True

    def __init__(self, boxes):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.sr_enabled = True
        self.boxes = torch.tensor(boxes)
        self.seen = {}

    def set_sr_enabled(self, flag):
        self.sr_enabled = bool(flag)

    def forward(self, images, pixel_mask, targets=None, hr_images=None, return_sr=False, check_values=None):
        self.seen = dict(
            images=images,
            mask=pixel_mask,
            targets=targets,
            hr=hr_images,
            return_sr=return_sr,
            check_values=check_values,
        )
        if self.training:
            return {"loss_x": self.w * 0 + images.mean()}
        out = []
        for b in range(images.shape[0]):
            r = {"boxes": self.boxes.clone(), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
            if return_sr:
                valid_h = int((~pixel_mask[b, :, 0]).sum())
                valid_w = int((~pixel_mask[b, 0, :]).sum())
                r["sr"] = torch.zeros(3, 2 * valid_h, 2 * valid_w)
            out.append(r)
        return out


def _model(boxes=((0.1, 0.2, 0.5, 0.6),), sr_eval=False):
    return SDCoNet(
        core=RecordingCore(list(boxes)), pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD, sr_eval=sr_eval
    )


def _img(h, w, value=100):
    return torch.full((3, h, w), value, dtype=torch.uint8)


def test_eval_padded_batch_masks_and_output_frame():
    model = _model().eval()
    inputs = [
        {"image": _img(40, 50), "height": 80, "width": 100},  # HR tile frame = 2 x LR
        {"image": _img(64, 30), "height": 64, "width": 30},
    ]
    with torch.no_grad():
        out = model(inputs)
    seen = model.core.seen
    assert tuple(seen["images"].shape) == (2, 3, 64, 64)
    mask = seen["mask"]
    assert not mask[0, :40, :50].any() and mask[0, 40:].all() and mask[0, :, 50:].all()
    assert not mask[1, :, :30].any() and mask[1, :, 30:].all()
    # normalised input, padding = 0 (mean colour)
    expected = (100 - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    assert (
        torch.allclose(seen["images"][0, :, 0, 0], expected) and seen["images"][0, :, 63, 63].abs().max() == 0
    )
    inst0, inst1 = out[0]["instances"], out[1]["instances"]
    assert isinstance(inst0, Instances) and inst0.image_size == (80, 100)
    assert inst0.pred_boxes.tensor.tolist()[0] == pytest.approx([10, 16, 50, 48])
    assert inst1.image_size == (64, 30)
    assert inst1.pred_boxes.tensor.tolist()[0] == pytest.approx([3, 12.8, 15, 38.4])
    assert inst0.scores.tolist() == pytest.approx([0.9]) and inst0.pred_classes.tolist() == [1]
    assert seen["return_sr"] is False and "sr_image" not in out[0]


def test_train_targets_are_cxcywh_normalised_to_the_unpadded_image_and_hr_is_aligned():
    model = _model().train()
    inst = Instances((40, 50))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 8.0, 14.0, 28.0]]))
    inst.gt_classes = torch.tensor([3])
    empty = Instances((64, 30))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.long)
    inputs = [
        {"image": _img(40, 50), "hr_image": _img(80, 100, 200), "instances": inst},
        {"image": _img(64, 30), "hr_image": _img(128, 60, 50), "instances": empty},
    ]
    losses = model(inputs)
    assert set(losses) == {"loss_x"}
    t = model.core.seen["targets"]
    assert t[0]["labels"].tolist() == [3]
    assert t[0]["boxes"].tolist()[0] == pytest.approx([9 / 50, 18 / 40, 10 / 50, 20 / 40])
    assert t[1]["boxes"].shape == (0, 4) and t[1]["labels"].dtype == torch.int64
    hr = model.core.seen["hr"]
    assert tuple(hr.shape) == (2, 3, 128, 128)
    v200 = (200 - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    assert (
        torch.allclose(hr[0, :, 79, 99], v200)
        and hr[0, :, 80:].abs().max() == 0
        and hr[0, :, :, 100:].abs().max() == 0
    )
    # stage 1: no HR passed
    model.core.set_sr_enabled(False)
    model(inputs)
    assert model.core.seen["hr"] is None


def test_hr_size_mismatch_and_missing_hr_are_clear_errors():
    model = _model().train()
    inst = Instances((40, 50))
    inst.gt_boxes = Boxes(torch.zeros(0, 4))
    inst.gt_classes = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="expected 2 x the LR input"):
        model([{"image": _img(40, 50), "hr_image": _img(80, 98), "instances": inst, "file_name": "a.png"}])
    with pytest.raises(ValueError, match="no 'hr_image'"):
        model([{"image": _img(40, 50), "instances": inst, "file_name": "a.png"}])


def test_sr_eval_returns_denormalised_sr_image():
    model = _model(sr_eval=True).eval()
    with torch.no_grad():
        out = model([{"image": _img(40, 50)}])
    assert model.core.seen["return_sr"] is True
    sr = out[0]["sr_image"]
    assert tuple(sr.shape) == (3, 80, 100)
    assert torch.allclose(sr[:, 0, 0], torch.tensor(PIXEL_MEAN))  # normalised 0 -> the mean colour


def test_pixel_stats_are_non_persistent_buffers_and_config_checks():
    model = _model()
    assert "pixel_mean" not in model.state_dict() and model.device.type == "cpu"
    assert set(model.state_dict()) == {"core.w"}
    cfg = get_sdconet_cfg()
    cfg.INPUT.FORMAT = "BGR"
    cfg.MODEL.SDCONET.NUM_CLASSES = 3
    with pytest.raises(ValueError, match="RGB"):
        SDCoNet(cfg)


def test_value_checks_at_the_host_boundary():
    """The adapter checks values on the mapper's (CPU) tensors and tells the core to skip its own checks."""
    model = _model().eval()
    with torch.no_grad():
        model([{"image": _img(32, 32), "height": 32, "width": 32}])
    assert model.core.seen["check_values"] is False
    bad = _img(32, 32).float()
    bad[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="tile_7.png' image contains NaN"):
        model([{"image": bad, "height": 32, "width": 32, "file_name": "tile_7.png"}])


def test_test_compile_runs_the_compiled_eval_graph_and_matches_eager():
    """TEST.COMPILE: the meta-architecture evaluates through torch.compile(core.forward_padded, fullgraph=True)."""
    from sdconet.modeling.build import build_sdconet
    from sdconet.modeling.config import SDCoNetConfig

    cfg = get_sdconet_cfg()
    assert cfg.TEST.COMPILE.ENABLED is False and cfg.TEST.COMPILE.BACKEND == "inductor"
    torch.manual_seed(0)
    core = build_sdconet(SDCoNetConfig.tiny(num_classes=3)).eval()
    eager = SDCoNet(core=core, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD, sr_eval=True).eval()
    compiled = SDCoNet(
        core=core,
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
        sr_eval=True,
        compile_mode="auto",
        compile_backend="aot_eager",  # inductor's C++ build takes minutes on CPU; the graph is the same
    ).eval()
    g = torch.Generator().manual_seed(0)
    inputs = [
        {
            "image": torch.randint(0, 255, (3, 64, 60), generator=g, dtype=torch.uint8),
            "height": 128,
            "width": 120,
        },
        {
            "image": torch.randint(0, 255, (3, 40, 64), generator=g, dtype=torch.uint8),
            "height": 80,
            "width": 128,
        },
    ]
    with torch.no_grad():
        ref = eager(inputs)
        got = compiled(inputs)
    assert compiled._compiled_eval is not None and eager._compiled_eval is None
    for a, b in zip(got, ref):
        ia, ib = a["instances"], b["instances"]
        assert torch.equal(ia.pred_classes, ib.pred_classes)
        assert torch.allclose(ia.pred_boxes.tensor, ib.pred_boxes.tensor, atol=1e-3)
        assert a["sr_image"].shape == b["sr_image"].shape  # cropped on the host to each image's size
