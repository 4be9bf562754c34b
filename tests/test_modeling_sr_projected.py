"""The channel-projecting SR decoder (SR branch on any 4-stage backbone): shapes, identity case, errors."""

import pytest
import torch
from torch import nn

from sdconet.modeling.backbone.swin_encoder import SwinEncoder
from sdconet.modeling.sr import ProjectedSRDecoder, SRDecoder

DEC = dict(
    bottleneck_channels=64, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 1), window_size=4, mlp_ratio=2.0,
    drop_path_rate=0.0, unembed_channels=8, recon_channels=4, num_groups=8,
)  # fmt: skip
WIDTHS = (16, 32, 64, 128)


def _resnet_like(b=2, h=64, w=96, channels=(40, 80, 160, 320), stem=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    stages = [
        torch.randn(b, c, h // (4 * 2**i), w // (4 * 2**i), generator=g) for i, c in enumerate(channels)
    ]
    return stages, torch.randn(b, stem, h // 4, w // 4, generator=g)


@pytest.mark.parametrize("scale", [2, 4])
def test_resnet_like_stages_give_scale_times_the_input(scale):
    torch.manual_seed(0)
    dec = ProjectedSRDecoder((40, 80, 160, 320), patch_channels=24, decoder_channels=WIDTHS, projection_groups=8,
                             scale=scale, **DEC)  # fmt: skip
    stages, stem = _resnet_like()
    sr = dec.eval()(stages, stem)
    assert sr.shape == (2, 3, 64 * scale, 96 * scale) and torch.isfinite(sr).all()
    assert all(isinstance(p[1], nn.GroupNorm) for p in dec.projections)  # 1x1 conv + GN on every stage


def test_gradients_reach_projections_and_the_backbone_maps():
    torch.manual_seed(0)
    dec = ProjectedSRDecoder((40, 80, 160, 320), decoder_channels=WIDTHS, projection_groups=8, **DEC)
    stages, _ = _resnet_like()
    stages = [s.requires_grad_() for s in stages]
    dec.train()(stages).abs().mean().backward()
    assert dec.patch_projection is None  # the projected first stage feeds the long skip
    for name, p in dec.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in stages)


def test_matching_widths_are_exactly_sdconets_decoder():
    """Swin stages (+ patch embedding): no projection parameters, output identical to the plain SRDecoder."""
    torch.manual_seed(0)
    enc = SwinEncoder(
        embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), drop_path_rate=0.0, img_size=64
    )
    proj = ProjectedSRDecoder(WIDTHS, patch_channels=16, decoder_channels=WIDTHS, **DEC).eval()
    plain = SRDecoder(encoder_channels=WIDTHS, **DEC).eval()
    plain.load_state_dict({k[len("decoder.") :]: v for k, v in proj.state_dict().items()})
    assert all(isinstance(p, nn.Identity) for p in (*proj.projections, proj.patch_projection))
    assert sum(p.numel() for p in proj.parameters()) == sum(p.numel() for p in plain.parameters())
    with torch.no_grad():
        feats = enc.eval()(torch.randn(1, 3, 64, 64))
        assert torch.equal(proj(feats["stages"], feats["patch"]), plain(feats))


def test_bad_inputs_name_the_problem():
    dec = ProjectedSRDecoder((40, 80, 160, 320), patch_channels=24, decoder_channels=WIDTHS, projection_groups=8,
                             **DEC)  # fmt: skip
    stages, stem = _resnet_like()
    with pytest.raises(ValueError, match="stage 2 must be"):
        dec([stages[0], stages[0], *stages[2:]], stem)
    with pytest.raises(ValueError, match="patch map"):
        dec(stages)
    with pytest.raises(ValueError, match="expected 4 stage maps"):
        dec(stages[:3], stem)
    with pytest.raises(ValueError, match="not divisible by num_groups"):
        ProjectedSRDecoder((40, 80, 160, 320), decoder_channels=(12, 32, 64, 128), projection_groups=8, **DEC)
    with pytest.raises(ValueError, match="one entry per backbone stage"):
        ProjectedSRDecoder((40, 80, 160), decoder_channels=WIDTHS, **DEC)
