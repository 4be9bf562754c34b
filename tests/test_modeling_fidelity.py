"""Fidelity options of the detection branch: the authors' FCOS-style saliency level assignment and centre rule
(vs. the paper's every-level targets), and the background-embedding mode of the pruned encoder."""

import dataclasses
import math

import pytest
import torch

from sdconet.modeling import build_sdconet
from sdconet.modeling.config import SDCoNetConfig
from sdconet.modeling.dino.encoder import SaliencyPrunedEncoder
from sdconet.modeling.saliency.targets import OFFICIAL_LEVEL_RANGES, saliency_targets


def _tiny(scale=2, **kw):
    return SDCoNetConfig.tiny(
        num_classes=2, sr=dataclasses.replace(SDCoNetConfig.tiny().sr, scale=scale), **kw
    )


def _detector_outputs(lr):
    """The parts of a detector forward's outputs the saliency targets read, for one unpadded lr x lr input."""
    side = [lr // s for s in (8, 16, 32, 64)]
    shapes = torch.tensor([[n, n] for n in side])
    return {"spatial_shapes": shapes, "valid_hw": shapes[None].clone(), "image_hw": torch.tensor([[lr, lr]])}


def test_forward_reports_the_valid_input_size():
    model = build_sdconet(_tiny(variant="dino_saliency")).eval()
    images = torch.zeros(2, 3, 64, 96)
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, 40:] = True
    mask[1, :, 72:] = True
    with torch.no_grad():
        out = model.detector(model.encoder(images)["stages"][1:], mask, None)
    assert out["image_hw"].tolist() == [[64, 96], [40, 72]]


def _boxes_hr(boxes_hr_px, hr):
    """(x0, y0, x1, y1) HR px -> normalised cxcywh (the V-frame targets the detector gets)."""
    b = torch.tensor(boxes_hr_px, dtype=torch.float32)
    cxcy = (b[:, :2] + b[:, 2:]) / 2
    wh = b[:, 2:] - b[:, :2]
    return torch.cat([cxcy, wh], 1) / hr


@pytest.mark.parametrize("scale,lr", [(2, 320), (4, 160)])
def test_official_level_ranges_are_wired_in_hr_pixels(scale, lr):
    """In a 640 px HR tile, a 40 px box is positive only at level 0 (max(l,t,r,b) <= 40 <= 64 HR px everywhere), a
    600 px one only at level 3 (>= 300 > 256 everywhere); with the paper's default both mark every level."""
    hr = lr * scale
    boxes = _boxes_hr([[10, 10, 50, 50], [20, 20, 620, 620]], hr)
    official = build_sdconet(
        _tiny(
            scale,
            saliency_level_bounds=(64, 128, 256),
            saliency_always_mark_center=False,
            saliency_target="cone",
        )
    ).eval()
    paper = build_sdconet(_tiny(scale)).eval()
    assert official.detector.saliency_range_scale == scale
    for model, expect_small, expect_big in ((official, [0], [3]), (paper, [0, 1, 2, 3], [0, 1, 2, 3])):
        outputs = _detector_outputs(lr)
        for box, expect in ((boxes[:1], expect_small), (boxes[1:], expect_big)):
            maps = model.detector.saliency_target_maps(outputs, [{"boxes": box}])
            marked = [lvl for lvl, m in enumerate(maps) if m.max() > 0]
            assert marked == expect, (model is official, box)
    # the detector's maps equal a direct call with the official ranges and HR image sizes
    outputs = _detector_outputs(lr)
    direct = saliency_targets(
        [boxes], outputs["spatial_shapes"], outputs["valid_hw"], mode="cone",
        level_ranges=OFFICIAL_LEVEL_RANGES, image_sizes=torch.tensor([[hr, hr]], dtype=torch.float32),
        always_mark_center=False,
    )  # fmt: skip
    for a, b in zip(official.detector.saliency_target_maps(outputs, [{"boxes": boxes}]), direct):
        assert torch.equal(a, b)


def test_serial_variant_measures_level_ranges_on_the_sr_image():
    model = build_sdconet(_tiny(variant="serial", saliency_level_bounds=(64, 128, 256)))
    assert model.detector.saliency_range_scale == 1.0


def test_always_mark_center_option():
    """A box smaller than a stride-8 cell between token centres: marked (1.0 at its cell) only with the option."""
    shapes = torch.tensor([[8, 8]])
    valid = torch.tensor([[[8, 8]]])
    box = torch.tensor([[0.26, 0.26, 0.02, 0.02]])  # between centres 0.1875 and 0.3125
    on = saliency_targets([box], shapes, valid, always_mark_center=True)[0]
    off = saliency_targets([box], shapes, valid, always_mark_center=False)[0]
    assert on.max() == 1.0 and on[0, 2, 2] == 1.0 and off.max() == 0.0


def test_config_validates_level_bounds():
    with pytest.raises(ValueError, match="saliency_level_bounds"):
        SDCoNetConfig(saliency_level_bounds=(64, 128))
    with pytest.raises(ValueError, match="saliency_level_bounds"):
        SDCoNetConfig(saliency_level_bounds=(128, 64, 256))
    with pytest.raises(ValueError, match="background_mode"):
        SDCoNetConfig(background_mode="never")


def _encoder_and_inputs(mode, value_mode="current"):
    torch.manual_seed(0)
    enc = SaliencyPrunedEncoder(
        num_layers=3, dim=16, nheads=2, num_levels=1, num_points=2, dim_feedforward=32,
        background_mode=mode, value_mode=value_mode, max_level_size=8,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in enc.background.parameters():
            p.normal_()
    shapes = torch.tensor([[4, 4]])
    s = 16
    src = torch.randn(1, s, 16)
    pos = torch.randn(1, s, 16)
    refs = torch.rand(1, s, 1, 2)
    pad = torch.zeros(1, s, dtype=torch.bool)
    # layer 0 updates tokens 0-7, layer 1 tokens 0-3, layer 2 tokens 0-1; tokens 8-15 are never selected
    sel = [(torch.arange(n)[None], torch.tensor([n])) for n in (8, 4, 2)]
    return enc, (src, pos, refs, shapes, torch.tensor([0]), pad, sel)


def test_background_embedding_per_layer_vs_once():
    outs = {}
    for mode in ("per_layer", "once"):
        enc, args = _encoder_and_inputs(mode)
        with torch.no_grad():
            memory, kept = enc(*args)
            bg = enc.background(args[3])  # (S, D)
        outs[mode] = (memory, bg, args[0][0])
    (m_layer, bg, src), (m_once, _, _) = outs["per_layer"], outs["once"]
    never = slice(8, 16)
    # a never-selected token: the background added once per layer (3x) vs once after the encoder
    torch.testing.assert_close(m_layer[0, never], src[never] + 3 * bg[never])
    torch.testing.assert_close(m_once[0, never], src[never] + bg[never])
    # "once" leaves the layers themselves untouched: = no background, then B on the tokens outside the last set
    enc, args = _encoder_and_inputs("once")
    with torch.no_grad():
        enc.background = None
        plain, _ = enc(*args)
    torch.testing.assert_close(m_once[0, :2], plain[0, :2])
    torch.testing.assert_close(m_once[0, 2:8], plain[0, 2:8] + bg[2:8])
    # per layer, the shifted tokens are values of later layers ("current"): the selected tokens differ too
    assert not torch.allclose(m_layer[0, :2], plain[0, :2])
    assert math.isfinite(float(m_layer.sum()))
