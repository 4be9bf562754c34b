"""Gradient routing (stage policy, fixed parameter groups) and full-model clipping; no detectron2 needed."""

import math

import pytest
import torch
from torch import nn

from sdconet.engine import (
    GROUP_NAMES,
    StagePolicy,
    build_param_groups,
    full_model_clipping,
    param_group_of,
)


# --------------------------------------------------------------------------------------------------------------
# Stage policy
def test_stage_by_epoch_default_16():
    p = StagePolicy()
    assert [p.stage(e) for e in (0, 15, 15.99, 16, 40)] == [1, 1, 1, 2, 2]
    assert not p.sr_enabled(15) and p.sr_enabled(16)


def test_stage_by_iteration_switches_exactly_at_start_epoch():
    p = StagePolicy(sr_start_epoch=3)
    ipe = 5
    stages = [p.stage_at_iter(i, ipe) for i in range(25)]
    assert stages.index(2) == 15 and set(stages[:15]) == {1} and set(stages[15:]) == {2}
    # resume past the switch: a pure function of the iteration
    assert p.sr_enabled_at_iter(17, ipe) and not p.sr_enabled_at_iter(14, ipe)
    assert p.epoch_at_iter(15, ipe) == 3


def test_no_sr_branch_never_enables_sr_and_zero_start_is_joint():
    assert not StagePolicy(sr_start_epoch=0, has_sr=False).sr_enabled_at_iter(100, 4)
    assert StagePolicy(sr_start_epoch=0).sr_enabled_at_iter(0, 4)
    with pytest.raises(ValueError):
        StagePolicy(sr_start_epoch=-1)


# --------------------------------------------------------------------------------------------------------------
# Parameter groups
class _Swinish(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))


class _Core(nn.Module):
    """Module names as the core model uses them (docs/ARCHITECTURE.md)."""

    def __init__(self, serial=False):
        super().__init__()
        self.encoder = _Swinish()
        if serial:
            self.sr_encoder = _Swinish()
        self.sr_decoder = nn.Sequential(nn.Linear(4, 4), nn.GroupNorm(1, 4))
        self.detector = nn.Module()
        self.detector.level_embed = nn.Parameter(torch.zeros(4, 4))
        self.detector.head = nn.Linear(4, 2)
        self.detector.encoder = nn.Linear(4, 4)  # "encoder" nested in the detector is detection, not backbone
        self.detector.alpha = nn.Parameter(torch.ones(3), requires_grad=False)  # frozen alpha still grouped

    def forward(self, x, sr=False):
        y = self.detector.head(self.detector.encoder(self.encoder.norm(self.encoder.proj(x))))
        out = y.sum() + self.encoder.relative_position_bias_table.sum() + self.detector.level_embed.sum()
        if sr:
            out = out + self.sr_decoder(x).sum()
        return out


def _by_name(groups):
    return {g["name"]: g for g in groups}


def test_param_group_of_prefixes():
    assert param_group_of("encoder.layers.0.w") == "encoder"
    assert param_group_of("sr_encoder.layers.0.w") == "encoder"
    assert param_group_of("sr_decoder.up.w") == "sr"
    assert param_group_of("detector.encoder.layers.0.w") == "detection"
    assert param_group_of("detector.saliency.alpha") == "detection"


def test_param_groups_with_other_prefixes():
    """Any model: e.g. a detectron2 detector whose pretrained body is backbone.bottom_up and SR head sr_branch."""
    enc, sr = ("backbone.bottom_up.",), ("sr_branch.",)
    assert param_group_of("backbone.bottom_up.res2.0.conv1.weight", enc, sr) == "encoder"
    assert param_group_of("backbone.fpn_lateral2.weight", enc, sr) == "detection"
    assert param_group_of("sr_branch.decoder.bottleneck.0.weight", enc, sr) == "sr"
    assert param_group_of("encoder.layers.0.w", enc, sr) == "detection"

    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.bottom_up = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    model.backbone.fpn = nn.Conv2d(4, 4, 1)
    model.roi_heads = nn.Linear(4, 2)
    model.sr_branch = nn.Sequential(nn.Conv2d(4, 3, 1), nn.GroupNorm(1, 3))
    g = _by_name(
        build_param_groups(
            model,
            base_lr=0.01,
            backbone_multiplier=0.5,
            sr_multiplier=0.25,
            encoder_prefixes=enc,
            sr_prefixes=sr,
        )
    )
    named = dict(model.named_parameters())
    ids = {n: {id(p) for p in x["params"]} for n, x in g.items()}
    assert ids["encoder"] == {
        id(named["backbone.bottom_up.0.weight"]),
        id(named["backbone.bottom_up.0.bias"]),
    }
    assert ids["encoder_no_decay"] == {
        id(named["backbone.bottom_up.1.weight"]),
        id(named["backbone.bottom_up.1.bias"]),
    }
    assert (
        id(named["backbone.fpn.weight"]) in ids["detection"]
        and id(named["roi_heads.bias"]) in ids["detection"]
    )
    assert ids["sr"] == {id(named["sr_branch.0.weight"]), id(named["sr_branch.0.bias"])}
    assert g["encoder"]["lr"] == pytest.approx(0.005) and g["sr_no_decay"]["lr"] == pytest.approx(0.0025)


def test_fixed_groups_learning_rates_and_decay():
    model = _Core(serial=True)
    groups = build_param_groups(
        model, base_lr=1e-4, weight_decay=1e-4, backbone_multiplier=0.1, sr_multiplier=0.5
    )
    assert [g["name"] for g in groups] == [n + s for n in GROUP_NAMES for s in ("", "_no_decay")]
    g = _by_name(groups)
    assert g["encoder"]["lr"] == pytest.approx(1e-5) and g["encoder_no_decay"]["lr"] == pytest.approx(1e-5)
    assert g["detection"]["lr"] == pytest.approx(1e-4)
    assert g["sr"]["lr"] == pytest.approx(5e-5) and g["sr_no_decay"]["lr"] == pytest.approx(5e-5)
    assert all(x["weight_decay"] == 1e-4 for n, x in g.items() if not n.endswith("no_decay"))
    assert all(x["weight_decay"] == 0.0 for n, x in g.items() if n.endswith("no_decay"))

    ids = {n: {id(p) for p in x["params"]} for n, x in g.items()}
    named = dict(model.named_parameters())
    assert {id(named[k]) for k in ("encoder.proj.weight", "sr_encoder.proj.bias")} <= ids["encoder"]
    assert {id(named[k]) for k in ("encoder.norm.weight", "encoder.relative_position_bias_table")} <= ids[
        "encoder_no_decay"
    ]
    assert (
        id(named["sr_decoder.0.weight"]) in ids["sr"]
        and id(named["sr_decoder.1.weight"]) in ids["sr_no_decay"]
    )
    assert id(named["detector.level_embed"]) in ids["detection_no_decay"]
    assert {id(named[k]) for k in ("detector.encoder.weight", "detector.alpha")} <= ids["detection"]
    # every parameter exactly once, frozen ones included
    all_ids = [id(p) for x in groups for p in x["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(named)


def test_layout_is_stable_without_sr_branch():
    class NoSR(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(2, 2)
            self.detector = nn.Linear(2, 2)

    groups = build_param_groups(NoSR())
    assert len(groups) == 6 and not _by_name(groups)["sr"]["params"]
    torch.optim.AdamW(groups)  # empty groups are legal


@pytest.mark.parametrize("kw", [dict(base_lr=0), dict(sr_multiplier=0), dict(backbone_multiplier=-1)])
def test_bad_multipliers_raise(kw):
    with pytest.raises(ValueError):
        build_param_groups(_Core(), **kw)


def test_sr_parameters_bit_identical_through_stage_1_then_updated():
    torch.manual_seed(0)
    model = _Core()
    opt = full_model_clipping(torch.optim.AdamW, max_norm=0.1)(build_param_groups(model, weight_decay=0.5))
    policy = StagePolicy(sr_start_epoch=2)
    ipe = 3
    sr_before = [p.detach().clone() for p in model.sr_decoder.parameters()]
    enc_before = model.encoder.proj.weight.detach().clone()
    x = torch.randn(5, 4)
    for it in range(2 * ipe):
        opt.zero_grad()
        model(x, sr=policy.sr_enabled_at_iter(it, ipe)).backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(sr_before, model.sr_decoder.parameters()))
    assert not torch.equal(enc_before, model.encoder.proj.weight)
    assert not model.detector.alpha.requires_grad and torch.equal(model.detector.alpha, torch.ones(3))
    opt.zero_grad()
    model(x, sr=policy.sr_enabled_at_iter(2 * ipe, ipe)).backward()
    opt.step()
    assert not torch.equal(sr_before[0], model.sr_decoder[0].weight)


# --------------------------------------------------------------------------------------------------------------
# Full-model clipping
def test_full_model_clipping_clips_the_global_norm_not_per_parameter():
    a = nn.Parameter(torch.zeros(3))
    b = nn.Parameter(torch.zeros(4))
    c = nn.Parameter(torch.zeros(2))  # no grad: ignored
    cls = full_model_clipping(torch.optim.SGD, max_norm=0.1)
    assert cls is full_model_clipping(torch.optim.SGD, max_norm=0.1)  # cached
    opt = cls([{"params": [a]}, {"params": [b, c]}], lr=1.0)
    a.grad = torch.full((3,), 3.0)
    b.grad = torch.full((4,), 4.0)
    norm = math.sqrt(9 * 3 + 16 * 4)
    opt.step()
    assert opt.last_grad_norm == pytest.approx(norm, rel=1e-5)
    # SGD lr 1: the step equals the clipped gradient; the global norm is 0.1 and directions are kept
    step = torch.cat([-a.detach(), -b.detach()])
    assert step.norm().item() == pytest.approx(0.1, rel=1e-4)
    assert (-a.detach() / (-b.detach()[0])).tolist() == pytest.approx([0.75] * 3, rel=1e-4)
    assert c.grad is None and torch.equal(c, torch.zeros(2))


def test_full_model_clipping_leaves_small_gradients_alone():
    a = nn.Parameter(torch.zeros(2))
    opt = full_model_clipping(torch.optim.SGD, max_norm=10.0)([a], lr=1.0)
    a.grad = torch.tensor([0.3, 0.4])
    opt.step()
    assert a.detach().tolist() == pytest.approx([-0.3, -0.4])
    with pytest.raises(ValueError):
        full_model_clipping(torch.optim.SGD, max_norm=0)
