"""Shared Swin encoder, window-attention blocks, Swin weight loading and detection levels."""

import math

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock

from sdconet.modeling.backbone.swin_blocks import run_swin_block, shifted_window_attention, window_shift
from sdconet.modeling.backbone.swin_encoder import SwinEncoder
from sdconet.modeling.backbone.swin_weights import load_swin_weights, to_official_layout
from sdconet.modeling.dino.levels import DetectionLevels

SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.0)


def _encoder(seed=0, **kw):
    torch.manual_seed(seed)
    return SwinEncoder(**{**SMALL, **kw}).eval()


# ----------------------------------------------------------------------------------------------------
# Encoder shapes and input sizes
@pytest.mark.parametrize("size", [(256, 256), (512, 512), (288, 224)])
def test_encoder_shapes(size):
    enc = _encoder(img_size=(256, 256))
    assert enc.out_channels == (16, 32, 64, 128)
    assert enc.strides == (4, 8, 16, 32)
    assert enc.size_divisibility == 32
    with torch.no_grad():
        out = enc(torch.randn(1, 3, *size))
    h, w = size
    assert out["patch"].shape == (1, 16, h // 4, w // 4)
    assert len(out["stages"]) == 4
    for x, c, s in zip(out["stages"], enc.out_channels, enc.strides):
        assert x.shape == (1, c, h // s, w // s)
        assert torch.isfinite(x).all()
    # each stage output is LayerNorm-ed over channels by its own (default-initialised) norm
    last = out["stages"][-1]
    assert torch.allclose(last.mean(1), torch.zeros(()), atol=1e-4)


def test_encoder_rejects_non_multiple_input():
    enc = _encoder()
    with pytest.raises(ValueError, match="size_divisibility 32"):
        enc(torch.randn(1, 3, 250, 256))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.randn(1, 1, 64, 64))


def test_build_size_does_not_clamp_windows():
    """Built at 64 (stage 4 is 2x2 < window 7) or 256: same parameters, same outputs on any input size."""
    small, big = _encoder(img_size=(64, 64)), _encoder(seed=1, img_size=(256, 256))
    assert all(b.attn.window_size == (7, 7) for layer in small.layers for b in layer.blocks)
    big.load_state_dict(small.state_dict())
    x = torch.randn(1, 3, 288, 224)
    with torch.no_grad():
        a, b = small(x), big(x)
    for p, q in zip(a["stages"], b["stages"]):
        assert torch.equal(p, q)


def test_gradient_checkpointing_matches():
    enc = _encoder()
    enc_ckpt = _encoder(use_checkpoint=True)
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    y1 = enc(x)["stages"][-1].sum()
    y2 = enc_ckpt(x)["stages"][-1].sum()
    assert torch.allclose(y1, y2, atol=1e-5)
    g1 = torch.autograd.grad(y1, enc.layers[0].blocks[0].attn.qkv.weight)[0]
    g2 = torch.autograd.grad(y2, enc_ckpt.layers[0].blocks[0].attn.qkv.weight)[0]
    assert torch.allclose(g1, g2, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Window attention: equal to timm on window multiples, Swin semantics (pad first, mask padding) elsewhere
@pytest.mark.parametrize("shift", [0, 3])
def test_block_equals_timm_on_window_multiples(shift):
    torch.manual_seed(0)
    block = SwinTransformerBlock(
        dim=16, input_resolution=(14, 21), num_heads=2, window_size=7, shift_size=shift, dynamic_mask=True
    ).eval()
    x = torch.randn(2, 14, 21, 16)
    with torch.no_grad():
        assert torch.allclose(run_swin_block(block, x), block(x), atol=1e-6)


def _reference_attention(x, attn, shift):
    """Brute force (S)W-MSA for one image (H, W, C): a token attends to the real tokens of its shifted window.

    Shifted windows along an axis are [s + k*w, s + (k+1)*w) plus the leading partial window [0, s) — Swin's
    definition, written without roll, padding or masks.
    """
    h, w, c = x.shape
    wh, ww = attn.window_size
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    group_r = torch.where(rows < shift[0], -1, (rows - shift[0]) // wh)
    group_c = torch.where(cols < shift[1], -1, (cols - shift[1]) // ww)
    allowed = (group_r[:, None] == group_r[None]) & (group_c[:, None] == group_c[None])
    heads = attn.num_heads
    qkv = attn.qkv(x.reshape(-1, c)).reshape(h * w, 3, heads, -1).permute(1, 2, 0, 3)
    q, k, v = qkv[0], qkv[1], qkv[2]
    dr = rows[:, None] - rows[None]
    dc = cols[:, None] - cols[None]
    index = ((dr + wh - 1) * (2 * ww - 1) + (dc + ww - 1)).clamp(
        0, attn.relative_position_bias_table.shape[0] - 1
    )
    bias = attn.relative_position_bias_table[index].permute(2, 0, 1)  # (heads, N, N)
    logits = (q @ k.transpose(-1, -2)) * attn.scale + bias
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = (logits.softmax(-1) @ v).permute(1, 0, 2).reshape(h * w, -1)
    return attn.proj(out).reshape(h, w, c)


@pytest.mark.parametrize("size", [(10, 9), (3, 9), (5, 5), (8, 8)])
@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_matches_swin_definition(size, shifted):
    torch.manual_seed(0)
    block = SwinTransformerBlock(
        dim=8, input_resolution=(4, 4), num_heads=2, window_size=4, always_partition=True
    )
    attn = block.attn.eval()
    target = (2, 2) if shifted else (0, 0)
    x = torch.randn(1, *size, 8)
    with torch.no_grad():
        got = shifted_window_attention(x, attn, target, mask_padding=True)[0]
        want = _reference_attention(x[0], attn, window_shift(size, (4, 4), target))
    assert torch.allclose(got, want, atol=1e-5)


def test_window_shift_only_where_larger_than_window():
    assert window_shift((8, 7), (7, 7), (3, 3)) == (3, 0)
    assert window_shift((4, 4), (7, 7), (3, 3)) == (0, 0)


# ----------------------------------------------------------------------------------------------------
# Weight loading
def _backbone_keys(enc):
    return [k for k in enc.state_dict() if not k.startswith("out_norms.")]


def _assert_loaded(target, source, report):
    assert report["missing_backbone"] == []
    assert report["mismatched"] == []
    assert set(_backbone_keys(source)) <= set(report["loaded"])
    assert all(k.startswith("out_norms.") for k in report["missing"])
    src = source.state_dict()
    for key in report["loaded"]:
        assert torch.equal(target.state_dict()[key], src[key]), key


def test_load_timm_layout_with_wrappers(tmp_path):
    source, target = _encoder(seed=1), _encoder(seed=2)
    sd = {f"module.backbone.{k}": v for k, v in source.state_dict().items() if not k.startswith("out_norms.")}
    path = tmp_path / "timm.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 3}}, path)
    report = load_swin_weights(target, str(path))
    assert report["layout"] == "timm"
    assert report["unexpected"] == []
    _assert_loaded(target, source, report)


def _official_keys(enc):
    """Key names of a Microsoft Swin checkpoint for this architecture (merging at the end of stages
    0..n-2)."""
    keys = {
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "patch_embed.norm.weight",
        "patch_embed.norm.bias",
    }
    n = len(enc.layers)
    for i, layer in enumerate(enc.layers):
        for j in range(len(layer.blocks)):
            p = f"layers.{i}.blocks.{j}."
            keys |= {p + "attn.relative_position_bias_table", p + "attn.relative_position_index"}
            for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                keys |= {p + m + ".weight", p + m + ".bias"}
        if i < n - 1:
            keys |= {f"layers.{i}.downsample.reduction.weight", f"layers.{i}.downsample.norm.weight",
                     f"layers.{i}.downsample.norm.bias"}  # fmt: skip
    return keys


def test_load_official_layout(tmp_path):
    source, target = _encoder(seed=1), _encoder(seed=2)
    official = to_official_layout(source.state_dict())
    assert set(official) == _official_keys(source)
    # what a real file also carries: shift masks of SW-MSA blocks, the final norm and the classifier
    official["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 49, 49)
    official["norm.weight"], official["norm.bias"] = torch.ones(128), torch.zeros(128)
    official["head.weight"], official["head.bias"] = torch.randn(1000, 128), torch.zeros(1000)
    path = tmp_path / "swin_official.pth"
    torch.save({"model": official}, path)
    report = load_swin_weights(target, str(path))
    assert report["layout"] == "official"
    assert report["unexpected"] == []
    assert {"head.weight", "norm.weight", "layers.0.blocks.1.attn_mask"} <= set(report["ignored"])
    _assert_loaded(target, source, report)


def test_official_patch_merging_order_needs_no_reordering():
    """The official PatchMerging concatenates x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]."""
    merge = _encoder().layers[1].downsample
    x = torch.randn(2, 8, 6, 16)
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    with torch.no_grad():
        assert torch.allclose(merge(x), merge.reduction(merge.norm(cat)), atol=1e-6)


def test_load_resizes_relative_position_tables(tmp_path):
    source, target = _encoder(seed=1, window_size=7), _encoder(seed=2, window_size=8)
    path = tmp_path / "w7.pth"
    torch.save(source.state_dict(), path)
    report = load_swin_weights(target, str(path))
    tables = [k for k in target.state_dict() if k.endswith("relative_position_bias_table")]
    assert report["resized"] == sorted(tables)
    assert report["missing_backbone"] == []
    assert target.layers[0].blocks[0].attn.relative_position_bias_table.shape == (15 * 15, 1)


def test_load_safetensors(tmp_path):
    from safetensors.torch import save_file

    source, target = _encoder(seed=1), _encoder(seed=2)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    report = load_swin_weights(target, str(path))
    _assert_loaded(target, source, report)
    assert report["missing"] == []  # out_norms were in this file too


def test_load_strict_names_missing_keys(tmp_path):
    source, target = _encoder(seed=1), _encoder(seed=2)
    sd = source.state_dict()
    del sd["layers.2.blocks.1.mlp.fc1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(RuntimeError, match=r"layers\.2\.blocks\.1\.mlp\.fc1\.weight"):
        load_swin_weights(target, str(path))
    report = load_swin_weights(target, str(path), strict_encoder=False)
    assert report["missing_backbone"] == ["layers.2.blocks.1.mlp.fc1.weight"]
    with pytest.raises(FileNotFoundError, match="does_not_exist.pth"):
        load_swin_weights(target, str(tmp_path / "does_not_exist.pth"))


def test_load_shape_mismatch_is_reported(tmp_path):
    source, target = _encoder(seed=1, embed_dim=24, num_heads=(1, 2, 2, 4)), _encoder(seed=2)
    path = tmp_path / "wide.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(RuntimeError, match="shape mismatches"):
        load_swin_weights(target, str(path))


# ----------------------------------------------------------------------------------------------------
# Detection levels
@pytest.mark.parametrize("lr_size", [(256, 256), (288, 224), (224, 160)])
def test_detection_levels_shapes(lr_size):
    torch.manual_seed(0)
    levels = DetectionLevels(in_channels=(32, 64, 128), out_channels=64, num_groups=8)
    h, w = lr_size
    stages = [torch.randn(2, c, h // s, w // s) for c, s in zip((32, 64, 128), (8, 16, 32))]
    out = levels(stages)
    assert len(out) == levels.num_levels == 4
    want = [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32), (math.ceil(h / 64), math.ceil(w / 64))]
    assert [tuple(o.shape[-2:]) for o in out] == want
    assert all(o.shape[:2] == (2, 64) for o in out)
    conv = levels.lateral[0][0]
    assert torch.count_nonzero(conv.bias) == 0
    bound = math.sqrt(6.0 / (conv.in_channels + conv.out_channels))  # Xavier-uniform bound for a 1x1 conv
    assert conv.weight.abs().max() <= bound


def test_detection_levels_extra_and_errors():
    levels = DetectionLevels(in_channels=(8, 16), out_channels=32, num_groups=4, num_extra_levels=2)
    out = levels([torch.randn(1, 8, 9, 7), torch.randn(1, 16, 5, 3)])
    assert [tuple(o.shape[-2:]) for o in out] == [(9, 7), (5, 3), (3, 2), (2, 1)]
    with pytest.raises(ValueError, match="stage 1 must be"):
        levels([torch.randn(1, 8, 9, 7), torch.randn(1, 8, 5, 3)])
    with pytest.raises(ValueError, match="expected 2 stage maps"):
        levels([torch.randn(1, 8, 9, 7)])
