"""SR decoder (paper Eq. 2-4) on the shared Swin encoder: shapes, scales, gradients, locality, full-size
counts."""

import time

import pytest
import torch

from sdconet.modeling.backbone.swin_encoder import SwinEncoder
from sdconet.modeling.dino.levels import DetectionLevels
from sdconet.modeling.sr.decoder import PatchExpand, SRDecoder

ENC = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), drop_path_rate=0.0)
DEC = dict(
    encoder_channels=(16, 32, 64, 128), bottleneck_channels=64, depths=(2, 1, 1, 2), num_heads=(2, 2, 2, 1),
    window_size=4, mlp_ratio=2.0, drop_path_rate=0.0, unembed_channels=8, recon_channels=4, num_groups=8,
)  # fmt: skip


def _models(seed=0, **dec_kw):
    torch.manual_seed(seed)
    return SwinEncoder(**ENC), SRDecoder(**{**DEC, **dec_kw})


@pytest.mark.parametrize(
    "size, scale, tail",
    [((64, 64), 2, "paper"), ((64, 64), 4, "paper"), ((288, 224), 2, "paper"), ((288, 224), 4, "official"),
     ((96, 160), 4, "paper"), ((96, 160), 2, "official")],
)  # fmt: skip
def test_sr_output_is_scale_times_input(size, scale, tail):
    enc, dec = _models(scale=scale, tail=tail)
    enc.eval(), dec.eval()
    with torch.no_grad():
        sr = dec(enc(torch.randn(1, 3, *size)))
    assert sr.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(sr).all()


def test_out_size_resizes():
    enc, dec = _models()
    with torch.no_grad():
        feats = enc.eval()(torch.randn(1, 3, 64, 96))
        assert dec.eval()(feats, out_size=(100, 150)).shape == (1, 3, 100, 150)
        assert dec(feats, out_size=(128, 192)).shape == (1, 3, 128, 192)


def test_gradients_reach_every_encoder_and_decoder_parameter():
    enc, dec = _models()
    enc.train(), dec.train()
    sr = dec(enc(torch.randn(2, 3, 64, 64)))
    sr.square().mean().backward()
    for name, module in (("encoder", enc), ("sr_decoder", dec)):
        for pname, p in module.named_parameters():
            assert p.grad is not None, f"{name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all()
    assert enc.patch_embed.proj.weight.grad.abs().sum() > 0
    assert enc.layers[-1].blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0


def test_decoder_is_spatially_local():
    """A change of the stride-32 map at its top-left cell only changes the top-left of the SR image.

    With 2x2 windows and no shifts, every decoder step keeps the cell's influence inside its 2x2 window, so
    the SR image changes only in the top-left (2 cells * 32 px * scale 2 = 128 px, plus the 3x3 tail convs). A
    bottleneck flattened without permute (the official bug) would spread it everywhere. The bottleneck
    GroupNorm pools over the whole map by design, so it is bypassed here.
    """
    torch.manual_seed(0)
    dec = SRDecoder(**{**DEC, "depths": (1, 1, 1, 1), "window_size": 2}).eval()
    dec.bottleneck[1] = torch.nn.Identity()
    h = w = 256
    feats = {
        "patch": torch.randn(1, 16, h // 4, w // 4),
        "stages": [torch.randn(1, c, h // s, w // s) for c, s in zip((16, 32, 64, 128), (4, 8, 16, 32))],
    }
    moved = {"patch": feats["patch"], "stages": list(feats["stages"])}
    moved["stages"][3] = moved["stages"][3].clone()
    moved["stages"][3][..., 0, 0] += 5.0
    with torch.no_grad():
        diff = (dec(feats) - dec(moved)).abs().amax(1)[0]
    reach = 2 * 32 * 2 + 4  # two stride-32 cells at scale 2, + the tail convs' support
    assert diff[:reach, :reach].max() > 1e-3
    assert diff[reach:, :].max() == 0 and diff[:, reach:].max() == 0


def test_patch_expand_is_layernorm_then_transposed_conv():
    torch.manual_seed(0)
    up = PatchExpand(8, 4)
    x = torch.randn(2, 3, 5, 8)
    ref = torch.nn.functional.conv_transpose2d(
        torch.nn.functional.layer_norm(x, (8,), up.norm.weight, up.norm.bias).permute(0, 3, 1, 2),
        up.up.weight,
        stride=2,
    )
    assert torch.allclose(up(x), ref.permute(0, 2, 3, 1), atol=1e-6)
    assert up(x).shape == (2, 6, 10, 4)


def test_decoder_errors():
    enc, dec = _models()
    feats = enc.eval()(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="expected 4 encoder stages"):
        dec({"patch": feats["patch"], "stages": feats["stages"][1:]})
    with pytest.raises(ValueError, match="tail must be one of"):
        SRDecoder(**{**DEC, "tail": "swinir"})
    with pytest.raises(ValueError, match="power-of-two"):
        SRDecoder(**{**DEC, "tail": "official", "scale": 3})
    assert SRDecoder(**{**DEC, "scale": 3}).eval()(feats).shape == (1, 3, 192, 192)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_full_size_swin_t_and_sr_decoder():
    """Swin-T + the official-size SR decoder at LR 256^2: shapes and parameter counts."""
    torch.manual_seed(0)
    enc, dec, levels = SwinEncoder(), SRDecoder(), DetectionLevels()
    # Swin-T without classifier/final norm (27.52 M) + 4 output LayerNorms.
    assert _count(enc) == pytest.approx(27.52e6, rel=2e-3)
    # The official SRNet is ~24.0 M (0.37 M unused) + its 10.6 M bottleneck conv (it lived in the official
    # neck).
    assert _count(dec.bottleneck) == 768 * 1536 * 9 + 2 * 1536
    assert _count(dec) - _count(dec.bottleneck) == pytest.approx(23.66e6, rel=2e-3)
    assert _count(levels) == pytest.approx(2.12e6, rel=2e-3)
    enc.eval(), dec.eval()
    with torch.no_grad():
        start = time.perf_counter()
        feats = enc(torch.randn(1, 3, 256, 256))
        sr = dec(feats)
        elapsed = time.perf_counter() - start
        lv = levels(feats["stages"][1:])
    assert [tuple(s.shape) for s in feats["stages"]] == [(1, 96, 64, 64), (1, 192, 32, 32), (1, 384, 16, 16),
                                                          (1, 768, 8, 8)]  # fmt: skip
    assert sr.shape == (1, 3, 512, 512)
    assert [tuple(x.shape[-2:]) for x in lv] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert elapsed < 60  # generous: a sanity bound for a 2-core CPU, not a benchmark
