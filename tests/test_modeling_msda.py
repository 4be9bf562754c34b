"""Multi-scale deformable attention (pure-PyTorch core, dispatcher, module) and sine position embeddings."""

import logging
import math

import pytest
import torch

from sdconet.modeling import ops
from sdconet.modeling.dino.ms_deform_attn import MSDeformAttn
from sdconet.modeling.dino.position_encoding import box_sine_embedding, sine_position_embedding
from sdconet.modeling.ops import (
    get_msda_backend,
    ms_deform_attn_pytorch,
    multi_scale_deformable_attention,
    set_msda_backend,
)

SHAPES = [(5, 7), (3, 2)]  # odd, non-square levels


@pytest.fixture(autouse=True)
def _reset_backend(monkeypatch):
    monkeypatch.delenv("SDCONET_MSDA_BACKEND", raising=False)
    set_msda_backend(None)
    yield
    set_msda_backend(None)


def _layout(shapes):
    spatial = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial.prod(1)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial, start, int(sizes.sum())


def _naive_msda(value, shapes, starts, loc, attn):
    """Per-query bilinear loop, align_corners=False, zero padding, float64."""
    bsz, _, heads, head_dim = value.shape
    _, nq, _, levels, points, _ = loc.shape
    out = torch.zeros(bsz, nq, heads, head_dim, dtype=torch.float64)
    v64 = value.double()
    for b in range(bsz):
        for q in range(nq):
            for m in range(heads):
                for lvl in range(levels):
                    h, w = shapes[lvl]
                    for p in range(points):
                        x = float(loc[b, q, m, lvl, p, 0]) * w - 0.5
                        y = float(loc[b, q, m, lvl, p, 1]) * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        fx, fy = x - x0, y - y0
                        a = float(attn[b, q, m, lvl, p])
                        for xi, yi, wt in (
                            (x0, y0, (1 - fx) * (1 - fy)),
                            (x0 + 1, y0, fx * (1 - fy)),
                            (x0, y0 + 1, (1 - fx) * fy),
                            (x0 + 1, y0 + 1, fx * fy),
                        ):
                            if 0 <= xi < w and 0 <= yi < h:
                                out[b, q, m] += a * wt * v64[b, starts[lvl] + yi * w + xi, m]
    return out.reshape(bsz, nq, heads * head_dim)


def _random_inputs(dtype=torch.float32, seed=0, nq=5, heads=2, points=3, head_dim=4, bsz=2):
    gen = torch.Generator().manual_seed(seed)
    spatial, start, total = _layout(SHAPES)
    levels = len(SHAPES)
    value = torch.randn(bsz, total, heads, head_dim, generator=gen, dtype=dtype)
    # include locations outside [0, 1] to exercise the zero padding
    loc = (torch.rand(bsz, nq, heads, levels, points, 2, generator=gen) * 1.4 - 0.2).to(dtype)
    attn = torch.rand(bsz, nq, heads, levels, points, generator=gen).to(dtype)
    return value, spatial, start, loc, attn


def test_pytorch_core_matches_naive_loop():
    value, spatial, start, loc, attn = _random_inputs()
    out = ms_deform_attn_pytorch(value, spatial, start, loc, attn)
    ref = _naive_msda(value, SHAPES, start.tolist(), loc, attn)
    assert out.shape == (2, 5, 8) and out.dtype == torch.float32
    rel = (out.double() - ref).abs().max() / ref.abs().max()
    assert rel <= 1e-5


def test_pixel_centre_with_uniform_weights_returns_pixel_values():
    spatial, start, total = _layout(SHAPES)
    value = torch.randn(1, total, 1, 3)
    points = 2
    loc = torch.zeros(1, 1, 1, 2, points, 2)
    picks = [(4, 1), (1, 2)]  # (x, y) pixel on each level
    expected = torch.zeros(3)
    for lvl, ((h, w), (px, py)) in enumerate(zip(SHAPES, picks)):
        loc[0, 0, 0, lvl, :, 0] = (px + 0.5) / w
        loc[0, 0, 0, lvl, :, 1] = (py + 0.5) / h
        expected += value[0, int(start[lvl]) + py * w + px, 0]
    attn = torch.full((1, 1, 1, 2, points), 1.0 / (2 * points))
    out = ms_deform_attn_pytorch(value, spatial, start, loc, attn)
    torch.testing.assert_close(out[0, 0], expected / 2, rtol=1e-6, atol=1e-6)
    # a single level with all weight: exactly that pixel
    attn1 = torch.zeros(1, 1, 1, 2, points)
    attn1[..., 0, 0] = 1.0
    out1 = ms_deform_attn_pytorch(value, spatial, start, loc, attn1)
    torch.testing.assert_close(out1[0, 0], value[0, 4 + 1 * 7, 0], rtol=1e-6, atol=1e-6)


def test_gradients_flow_to_all_inputs():
    value, spatial, start, loc, attn = _random_inputs(
        dtype=torch.float64, nq=2, heads=1, points=2, head_dim=2
    )
    loc = loc.clamp(0.05, 0.95)  # away from the border where the bilinear stencil changes
    value.requires_grad_(True)
    loc.requires_grad_(True)
    attn.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, lc, a: ms_deform_attn_pytorch(v, spatial, start, lc, a),
        (value, loc, attn),
        eps=1e-6,
        atol=1e-5,
    )


def test_bfloat16_runs_and_is_close():
    value, spatial, start, loc, attn = _random_inputs()
    out32 = ms_deform_attn_pytorch(value, spatial, start, loc, attn)
    out16 = ms_deform_attn_pytorch(value.bfloat16(), spatial, start, loc.bfloat16(), attn.bfloat16())
    assert out16.dtype == torch.bfloat16
    assert (out16.float() - out32).abs().max() < 0.1 * out32.abs().max()


def test_pytorch_core_rejects_bad_shapes():
    value, spatial, start, loc, attn = _random_inputs()
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn_pytorch(value, spatial, start, loc, attn[..., :1])
    with pytest.raises(ValueError, match="spatial_shapes"):
        ms_deform_attn_pytorch(value[:, :-1], spatial, start, loc, attn)


# ---------------------------------------------------------------------------------------------- dispatcher
def test_auto_on_cpu_uses_pytorch(monkeypatch, caplog):
    monkeypatch.setattr(ops, "_logged", set())
    value, spatial, start, loc, attn = _random_inputs()
    assert get_msda_backend() == "auto"
    with caplog.at_level(logging.INFO, logger="sdconet.modeling.ops"):
        out = multi_scale_deformable_attention(value, spatial, start, loc, attn)
    assert "pytorch backend on cpu" in caplog.text
    torch.testing.assert_close(out, ms_deform_attn_pytorch(value, spatial, start, loc, attn))


def test_forced_triton_on_cpu_raises(monkeypatch):
    value, spatial, start, loc, attn = _random_inputs()
    set_msda_backend("triton")
    with pytest.raises(RuntimeError, match="Triton needs CUDA"):
        multi_scale_deformable_attention(value, spatial, start, loc, attn)
    set_msda_backend(None)
    monkeypatch.setenv("SDCONET_MSDA_BACKEND", "triton")
    assert get_msda_backend() == "triton"
    with pytest.raises(RuntimeError, match="Triton needs CUDA"):
        multi_scale_deformable_attention(value, spatial, start, loc, attn)
    monkeypatch.setenv("SDCONET_MSDA_BACKEND", "pytorch")
    assert get_msda_backend() == "pytorch"
    multi_scale_deformable_attention(value, spatial, start, loc, attn)


def test_unknown_backend_rejected(monkeypatch):
    with pytest.raises(ValueError, match="unknown MSDA backend"):
        set_msda_backend("cuda")
    monkeypatch.setenv("SDCONET_MSDA_BACKEND", "bogus")
    with pytest.raises(ValueError, match="SDCONET_MSDA_BACKEND"):
        get_msda_backend()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_cuda_matches_pytorch():
    value, spatial, start, loc, attn = (t.cuda() for t in _random_inputs())
    out = multi_scale_deformable_attention(value, spatial, start, loc, attn)
    ref = ms_deform_attn_pytorch(value, spatial, start, loc, attn)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- module
def test_module_init_circular_grid():
    m = MSDeformAttn(embed_dim=32, num_heads=8, num_levels=2, num_points=3)
    bias = m.sampling_offsets.bias.view(8, 2, 3, 2)
    dirs = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]], dtype=torch.float32
    )
    for p in range(3):
        for lvl in range(2):
            torch.testing.assert_close(bias[:, lvl, p], dirs * (p + 1), atol=1e-6, rtol=0)
    assert torch.count_nonzero(m.sampling_offsets.weight) == 0
    assert torch.count_nonzero(m.attention_weights.weight) == 0
    assert torch.count_nonzero(m.attention_weights.bias) == 0
    assert torch.count_nonzero(m.value_proj.bias) == 0 and torch.count_nonzero(m.output_proj.bias) == 0


def _probe_module(points):
    """8 heads of width 1, one 3x7 level; values = token index; point 0 gets (almost) all attention."""
    m = MSDeformAttn(embed_dim=8, num_heads=8, num_levels=1, num_points=points)
    with torch.no_grad():
        m.value_proj.weight.copy_(torch.eye(8))
        m.output_proj.weight.copy_(torch.eye(8))
        bias = torch.zeros(8, 1, points)
        bias[..., 0] = 50.0
        m.attention_weights.bias.copy_(bias.view(-1))
    h, w = 3, 7
    spatial, start, total = _layout([(h, w)])
    value_input = torch.arange(total, dtype=torch.float32)[None, :, None].expand(1, total, 8).contiguous()
    return m, spatial, start, value_input, h, w


def test_module_offsets_normalised_by_width_height():
    m, spatial, start, value_input, h, w = _probe_module(points=2)
    ref = torch.tensor([(2 + 0.5) / w, (1 + 0.5) / h]).view(1, 1, 1, 2)  # pixel (x=2, y=1)
    out = m(torch.zeros(1, 1, 8), ref, value_input, spatial, start)
    # heads 0, 1, 2 step one pixel along (1,0), (1,1), (0,1): pixels (3,1), (3,2), (2,2)
    torch.testing.assert_close(out[0, 0, :3], torch.tensor([10.0, 17.0, 16.0]), atol=1e-4, rtol=0)


def test_module_box_references_scale_by_half_box():
    m, spatial, start, value_input, h, w = _probe_module(points=2)
    # point 0 of head 0 has offset (1, 0): loc = cx + 1/P * w_box / 2 -> one pixel right when w_box = 4 px
    box = torch.tensor([(2 + 0.5) / w, (1 + 0.5) / h, 4.0 / w, 4.0 / h]).view(1, 1, 1, 4)
    out = m(torch.zeros(1, 1, 8), box, value_input, spatial, start)
    torch.testing.assert_close(out[0, 0, :3], torch.tensor([10.0, 17.0, 16.0]), atol=1e-4, rtol=0)


def test_module_padding_mask_zeroes_values():
    torch.manual_seed(0)
    m = MSDeformAttn(embed_dim=16, num_heads=2, num_levels=2, num_points=2)
    spatial, start, total = _layout(SHAPES)
    query, value_input = torch.randn(1, 4, 16), torch.randn(1, total, 16)
    ref = torch.rand(1, 4, 2, 2)
    mask = torch.zeros(1, total, dtype=torch.bool)
    mask[0, 10:20] = True
    out = m(query, ref, value_input, spatial, start, mask)
    value_input2 = value_input.clone()
    value_input2[0, 10:20] = 1e3  # masked tokens must not matter
    torch.testing.assert_close(m(query, ref, value_input2, spatial, start, mask), out)
    with pytest.raises(ValueError, match="reference_points"):
        m(query, ref[..., :1, :], value_input, spatial, start)


# ---------------------------------------------------------------------------------------------- position
def test_sine_embedding_is_batch_invariant_on_valid_region():
    alone = torch.zeros(1, 5, 7, dtype=torch.bool)
    batch = torch.ones(2, 8, 10, dtype=torch.bool)
    batch[0, :5, :7] = False
    batch[1, :8, :10] = False
    pe_alone = sine_position_embedding(alone)
    pe_batch = sine_position_embedding(batch)
    assert pe_alone.shape == (1, 256, 5, 7)
    torch.testing.assert_close(pe_batch[0, :, :5, :7], pe_alone[0], atol=1e-5, rtol=0)


def test_sine_embedding_values_and_agreement_with_box_embedding():
    h, w, feats, temp = 3, 4, 8, 10000.0
    pe = sine_position_embedding(torch.zeros(1, h, w, dtype=torch.bool), num_feats=feats, temperature=temp)
    y, x = 2, 1
    ny, nx = (y + 0.5) / h * 2 * math.pi, (x + 0.5) / w * 2 * math.pi
    # y block first: channel 2i = sin(v / T^(2i/F)), 2i+1 = cos(same)
    assert abs(pe[0, 0, y, x] - math.sin(ny)) < 1e-5
    assert abs(pe[0, 1, y, x] - math.cos(ny)) < 1e-5
    assert abs(pe[0, 2, y, x] - math.sin(ny / temp ** (2 / feats))) < 1e-5
    assert abs(pe[0, 3, y, x] - math.cos(ny / temp ** (2 / feats))) < 1e-5
    assert abs(pe[0, feats, y, x] - math.sin(nx)) < 1e-5
    # the pixel-centre embedding equals the point embedding of its (x, y) centre
    pt = torch.tensor([(x + 0.5) / w, (y + 0.5) / h])
    torch.testing.assert_close(box_sine_embedding(pt, num_feats=feats), pe[0, :, y, x], atol=1e-5, rtol=0)


def test_box_sine_embedding_order_and_shapes():
    boxes = torch.rand(2, 3, 4)
    emb = box_sine_embedding(boxes)
    assert emb.shape == (2, 3, 512)
    per = [box_sine_embedding(boxes[..., [i, i]])[..., :128] for i in range(4)]  # embedding of coordinate i
    for block, coord in enumerate([1, 0, 2, 3]):  # (y, x, w, h)
        torch.testing.assert_close(emb[..., block * 128 : (block + 1) * 128], per[coord])
    assert box_sine_embedding(boxes[..., :2]).shape == (2, 3, 256)
    with pytest.raises(ValueError):
        box_sine_embedding(torch.rand(3))
