"""End-to-end behaviour of the core model (tiny sizes, CPU)."""

import pytest
import torch

from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

torch.set_num_threads(2)


def _batch(sizes, with_objects=True, num_classes=10, seed=0):
    """Random normalised images padded into one batch, their masks and targets."""
    g = torch.Generator().manual_seed(seed)
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    images = torch.zeros(len(sizes), 3, h, w)
    mask = torch.ones(len(sizes), h, w, dtype=torch.bool)
    targets = []
    for i, (hh, ww) in enumerate(sizes):
        images[i, :, :hh, :ww] = torch.randn(3, hh, ww, generator=g)
        mask[i, :hh, :ww] = False
        if with_objects:
            n = 3
            boxes = torch.cat(
                [torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.2 + 0.05], 1
            )
            targets.append({"labels": torch.randint(0, num_classes, (n,), generator=g), "boxes": boxes})
        else:
            targets.append({"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)})
    return images, mask, targets


def _hr(images, scale=2):
    return torch.nn.functional.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_sdconet(SDCoNetConfig.tiny())


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (96, 64), (62, 50)])
def test_eval_shapes_and_frames(tiny, size):
    tiny.eval()
    images, mask, _ = _batch([size])
    with torch.no_grad():
        out = tiny(images, mask, return_sr=True, return_saliency=True, return_kept=True)
    assert len(out) == 1
    res = out[0]
    k = tiny.topk_test
    assert res["boxes"].shape == (k, 4) and res["scores"].shape == (k,) and res["labels"].shape == (k,)
    assert (res["boxes"] >= 0).all() and (res["boxes"] <= 1).all()
    assert (res["boxes"][:, 2:] >= res["boxes"][:, :2]).all()
    assert torch.all(res["scores"][:-1] >= res["scores"][1:])
    assert res["sr"].shape == (3, 2 * size[0], 2 * size[1])
    # saliency maps cropped to the valid token grid: ceil(size / stride)
    for lvl, m in enumerate(res["saliency"]):
        s = 8 * 2**lvl
        assert m.shape == (-(-size[0] // s), -(-size[1] // s))
    assert len(res["kept"]) == tiny.detector.encoder.layers.__len__()


def test_mixed_batch_padding_never_kept_and_boxes_per_image(tiny):
    tiny.train()
    images, mask, targets = _batch([(64, 64), (40, 56)])
    losses = tiny(images, mask, targets, _hr(images))
    assert all(torch.isfinite(v) for v in losses.values())
    tiny.eval()
    with torch.no_grad():
        out = tiny(images, mask, return_kept=True)
    # kept-token maps of the small image cover only its own valid grid
    for layer_maps in out[1]["kept"]:
        for lvl, m in enumerate(layer_maps):
            s = 8 * 2**lvl
            assert m.shape == (-(-40 // s), -(-56 // s))
    for res in out:
        assert (res["boxes"] >= 0).all() and (res["boxes"] <= 1).all()


def test_same_loss_keys_with_and_without_objects(tiny):
    tiny.train()
    tiny.set_sr_enabled(False)
    images, mask, targets = _batch([(64, 64), (64, 64)])
    keys_full = set(tiny(images, mask, targets))
    _, _, empty = _batch([(64, 64), (64, 64)], with_objects=False)
    losses_empty = tiny(images, mask, empty)
    assert set(losses_empty) == keys_full
    assert "loss_sr" not in keys_full
    total = sum(losses_empty.values())
    total.backward()  # empty targets must train
    assert torch.isfinite(total)
    tiny.set_sr_enabled(True)
    keys_stage2 = set(tiny(images, mask, targets, _hr(images)))
    assert keys_stage2 == keys_full | {"loss_sr"}
    for suffix in ("", "_0", "_enc", "_dn"):
        assert f"loss_class{suffix}" in keys_full
    assert "loss_saliency" in keys_full


def test_stage1_sr_not_run_and_bit_identical_after_adamw():
    torch.manual_seed(0)
    model = build_sdconet(SDCoNetConfig.tiny())
    model.train()
    model.set_sr_enabled(False)
    calls = []
    handle = model.sr_decoder.register_forward_pre_hook(lambda *a: calls.append(1))
    before = {n: p.detach().clone() for n, p in model.sr_decoder.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    images, mask, targets = _batch([(64, 64), (64, 64)])
    for _ in range(2):
        opt.zero_grad()
        sum(model(images, mask, targets, _hr(images)).values()).backward()
        assert all(p.grad is None for p in model.sr_decoder.parameters())
        opt.step()
    assert not calls, "the SR decoder must not run in stage 1"
    for n, p in model.sr_decoder.named_parameters():
        assert torch.equal(p, before[n]), n
    # stage 2: gradients reach the SR decoder and, through it, the encoder
    model.set_sr_enabled(True)
    opt.zero_grad()
    losses = model(images, mask, targets, _hr(images))
    losses["loss_sr"].backward()
    assert calls
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.sr_decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert "sr_psnr" in model.last_stats
    handle.remove()


@pytest.mark.parametrize("variant", ["dino", "dino_saliency", "dino_sr", "serial"])
def test_variants_train_and_eval(variant):
    torch.manual_seed(0)
    model = build_sdconet(SDCoNetConfig.tiny(variant=variant))
    model.train()
    images, mask, targets = _batch([(64, 64)])
    losses = model(images, mask, targets, _hr(images))
    assert ("loss_saliency" in losses) == (variant in ("dino_saliency", "serial"))
    assert ("loss_sr" in losses) == (variant in ("dino_sr", "serial"))
    sum(losses.values()).backward()
    assert (model.sr_decoder is None) == (variant in ("dino", "dino_saliency"))
    model.eval()
    with torch.no_grad():
        out = model(images, mask)
    assert out[0]["boxes"].shape[1] == 4


def test_filter_modes_kept_ratio():
    torch.manual_seed(0)
    images, mask, _ = _batch([(128, 128)])
    ratios = {}
    for mode in ("none", "layer", "level", "joint"):
        model = build_sdconet(SDCoNetConfig.tiny(filter_mode=mode)).eval()
        with torch.no_grad():
            model(images, mask)
        ratios[mode] = model.last_stats["kept_token_ratio"]
    assert ratios["none"] == 1.0
    assert ratios["joint"] < ratios["layer"] < 1.0
    assert ratios["joint"] < ratios["level"] < 1.0


def test_bad_inputs(tiny):
    tiny.train()
    images, mask, targets = _batch([(64, 64)])
    with pytest.raises(ValueError, match="3, H, W"):
        tiny(images[:, :2], mask[:, :, :], targets)
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tiny(bad, mask, targets)
    with pytest.raises(ValueError, match="target dicts"):
        tiny(images, mask, targets + targets)
    bad_labels = [{"labels": torch.tensor([10]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        tiny(images, mask, bad_labels)
    # boxes reaching outside [0, 1] are clipped, fully-outside ones dropped: training still works
    outside = [
        {"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.95, 0.5, 0.3, 0.2], [1.5, 1.5, 0.1, 0.1]])}
    ]
    tiny.set_sr_enabled(False)
    losses = tiny(images, mask, outside)
    assert all(torch.isfinite(v) for v in losses.values())
    tiny.set_sr_enabled(True)
    with pytest.raises(ValueError, match="hr_images are required"):
        tiny(images, mask, targets)


def test_joint_filtering_counts_fewer_flops_than_none():
    from sdconet.evaluation.complexity import inference_gflops

    torch.manual_seed(0)
    gflops = {}
    for mode in ("none", "joint"):
        model = build_sdconet(SDCoNetConfig.tiny(filter_mode=mode))
        gflops[mode], _ = inference_gflops(model, (128, 128))
    assert gflops["joint"] < 0.95 * gflops["none"], gflops
