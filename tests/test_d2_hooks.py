"""Stage hook and optimizer of the detectron2 adapter, with a toy model (detectron2's tests/test_engine.py style)."""

import pytest
import torch
from torch import nn

pytest.importorskip("detectron2")

from detectron2.engine import HookBase, SimpleTrainer  # noqa: E402
from detectron2.solver import build_lr_scheduler  # noqa: E402

from sdconet.d2 import (  # noqa: E402
    SRStageHook,
    TrainingStatsHook,
    build_sdconet_optimizer,
    core_of,
    get_sdconet_cfg,
)
from sdconet.engine import StagePolicy  # noqa: E402


class ToyCore(nn.Module):
    """Core-model contract in miniature: encoder/detector/sr_decoder children, SR switch, loss dict, stats."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 3)
        self.detector = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
        self.sr_decoder = nn.Linear(3, 3)
        self.sr_enabled = True
        self.last_stats = {}
        self.calls = []  # (sr_enabled) per forward

    has_sr = True

    def set_sr_enabled(self, flag):
        self.sr_enabled = bool(flag)

    def forward(self, data):
        x = self.encoder(data)
        losses = {"loss_det": self.detector(x).pow(2).mean()}
        if self.sr_enabled:
            losses["loss_sr"] = (self.sr_decoder(x) - data).abs().mean()
        self.calls.append(self.sr_enabled)
        self.last_stats = {"kept_token_ratio": 0.5, **({"sr_psnr": 20.0} if self.sr_enabled else {})}
        return losses


class ToyMetaArch(nn.Module):
    def __init__(self):
        super().__init__()
        self.core = ToyCore()

    def forward(self, data):
        return self.core(data)


def _loader():
    g = torch.Generator().manual_seed(0)
    while True:
        yield torch.randn(4, 3, generator=g)


def _cfg(**solver):
    cfg = get_sdconet_cfg()
    cfg.SOLVER.MAX_ITER = 12
    cfg.SOLVER.STEPS = (8,)
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _trainer(model, cfg, start_epoch, ipe):
    opt = build_sdconet_optimizer(cfg, model)
    trainer = SimpleTrainer(model, _loader(), opt)
    trainer.register_hooks([SRStageHook(StagePolicy(sr_start_epoch=start_epoch), ipe), TrainingStatsHook()])
    return trainer


def test_stage_hook_switches_at_exactly_the_start_iteration():
    model = ToyMetaArch()
    trainer = _trainer(model, _cfg(), start_epoch=2, ipe=3)
    trainer.train(0, 10)
    assert model.core.calls == [False] * 6 + [True] * 4
    hist = trainer.storage.history("stage").values()
    assert [v for v, _ in hist] == [1.0] * 6 + [2.0] * 4


def test_stage_hook_on_resume_past_the_switch_starts_in_stage_2():
    model = ToyMetaArch()
    trainer = _trainer(model, _cfg(), start_epoch=2, ipe=3)
    trainer.train(7, 9)  # resumed at iteration 7 > 6
    assert model.core.calls == [True, True]
    # and a resume before the switch still switches at 6
    model2 = ToyMetaArch()
    _trainer(model2, _cfg(), start_epoch=2, ipe=3).train(4, 8)
    assert model2.core.calls == [False, False, True, True]


def test_sr_parameters_untouched_in_stage_1_and_trained_in_stage_2():
    model = ToyMetaArch()
    sr0 = model.core.sr_decoder.weight.detach().clone()
    enc0 = model.core.encoder.weight.detach().clone()
    trainer = _trainer(model, _cfg(), start_epoch=1, ipe=4)
    trainer.train(0, 4)
    assert torch.equal(
        sr0, model.core.sr_decoder.weight
    )  # bit-identical through stage 1 (wd 1e-4 not applied)
    assert not torch.equal(enc0, model.core.encoder.weight)
    trainer.train(4, 6)
    assert not torch.equal(sr0, model.core.sr_decoder.weight)


def test_optimizer_groups_learning_rates_and_full_model_clipping():
    model = ToyMetaArch()
    cfg = _cfg(BASE_LR=1e-4, BACKBONE_MULTIPLIER=0.1, SR_LR_MULTIPLIER=0.5)
    opt = build_sdconet_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["encoder"] == pytest.approx(1e-5)
    assert lrs["detection"] == pytest.approx(1e-4) and lrs["detection_no_decay"] == pytest.approx(1e-4)
    assert lrs["sr"] == pytest.approx(5e-5)
    # LayerNorm parameters have no weight decay
    ln = {id(p) for p in model.core.detector[1].parameters()}
    assert all(g["weight_decay"] == 0 for g in opt.param_groups if ln & {id(p) for p in g["params"]})
    # full-model clipping: global norm of all grads <= 0.1 after step (SGD lr 1 exposes the clipped gradient)
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.MOMENTUM = 0.0
    opt = build_sdconet_optimizer(cfg, model)
    for g in opt.param_groups:
        g["lr"] = 1.0
        g["weight_decay"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    opt.step()
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert step.norm().item() == pytest.approx(0.1, rel=1e-4)
    assert step.abs().max().item() < 0.1  # per-parameter clipping would allow 0.1 per element
    # detectron2's per-parameter clipping still available
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    assert "GradientClip" in type(build_sdconet_optimizer(cfg, model)).__name__


def test_lr_scheduler_scales_every_group_and_keeps_ratios():
    model = ToyMetaArch()
    cfg = _cfg()
    opt = build_sdconet_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(8):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["detection"] == pytest.approx(1e-5)  # x0.1 at step 8
    assert lrs["sr"] == pytest.approx(0.5e-5) and lrs["encoder"] == pytest.approx(1e-6)


def test_training_stats_are_logged():
    model = ToyMetaArch()
    trainer = _trainer(model, _cfg(), start_epoch=1, ipe=2)
    trainer.train(0, 4)
    h = trainer.storage.histories()
    for key in (
        "lr/encoder",
        "lr/detection",
        "lr/sr",
        "train/kept_token_ratio",
        "train/sr_psnr",
        "grad_norm",
    ):
        assert key in h, key
    assert h["lr/sr"].latest() == pytest.approx(5e-5)


def test_core_of_unwraps():
    m = ToyMetaArch()
    assert core_of(m) is m.core and core_of(m.core) is m.core


def test_every_group_has_a_name_for_logging():
    opt = build_sdconet_optimizer(_cfg(), ToyMetaArch())
    assert [g["name"] for g in opt.param_groups] == [
        "encoder", "encoder_no_decay", "detection", "detection_no_decay", "sr", "sr_no_decay"
    ]  # fmt: skip


def test_optimizer_rejects_unknown_name_and_params_outside_core():
    cfg = _cfg(OPTIMIZER="LAMB")
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_sdconet_optimizer(cfg, ToyMetaArch())
    m = ToyMetaArch()
    m.extra = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="outside model.core"):
        build_sdconet_optimizer(_cfg(), m)


class _Record(HookBase):
    def __init__(self):
        self.flags = []

    def before_step(self):
        self.flags.append(core_of(self.trainer.model).sr_enabled)


def test_hook_runs_before_other_hooks_see_the_step():
    model = ToyMetaArch()
    opt = build_sdconet_optimizer(_cfg(), model)
    trainer = SimpleTrainer(model, _loader(), opt)
    rec = _Record()
    trainer.register_hooks([SRStageHook(StagePolicy(sr_start_epoch=1), 2), rec])
    trainer.train(0, 4)
    assert rec.flags == [False, False, True, True]
