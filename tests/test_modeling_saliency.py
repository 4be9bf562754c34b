"""Saliency predictor (Eq. 5-6), saliency targets (Eq. 7) and the soft-target focal loss."""

import math

import pytest
import torch

from sdconet.modeling.saliency.predictor import SaliencyPredictor, upsample_bilinear
from sdconet.modeling.saliency.targets import (
    DEFAULT_GAUSSIAN_SIGMA,
    saliency_loss,
    saliency_targets,
    valid_hw_from_masks,
)

DIM = 16
HIDDEN = 16


def _masks(shapes, valid_hws):
    """L bool (B, H, W) masks, True on each image's top-left valid rectangle."""
    out = []
    for lvl, (h, w) in enumerate(shapes):
        m = torch.zeros(len(valid_hws), h, w, dtype=torch.bool)
        for b, hw in enumerate(valid_hws):
            m[b, : hw[lvl][0], : hw[lvl][1]] = True
        out.append(m)
    return out


def _tokens(shapes, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, h * w, DIM, generator=g) for h, w in shapes]


def _predictor(**kw):
    torch.manual_seed(0)
    kw.setdefault("alpha_mode", "fixed")
    kw.setdefault("alpha_value", 0.7)
    pred = SaliencyPredictor(dim=DIM, hidden_dim=HIDDEN, num_levels=4, **kw).eval()
    if kw.get("propagation") == "official":
        # The official modulation m * (1 + alpha * s) is a per-token scale that the predictor's input
        # LayerNorm removes (see test_official_modulation_is_cancelled_by_layernorm); drop the LN so the
        # padding tests can observe the top-down path.
        pred.mlp.mlp1[0] = torch.nn.Identity()
    return pred


CANVAS = [(8, 12), (4, 6), (2, 3), (1, 2)]
SMALL = [(6, 8), (3, 4), (2, 2), (1, 1)]  # valid sizes of the smaller image (ceil-halving pyramid)


@pytest.mark.parametrize("propagation", ["paper", "official"])
@pytest.mark.parametrize("shapes", [CANVAS, [(10, 6), (5, 3), (3, 2), (2, 1)]])
def test_predictor_shapes_and_padding_scores(propagation, shapes):
    small = [(max(1, h - 2), max(1, w - 1)) for h, w in shapes]
    masks = _masks(shapes, [shapes, small])
    pred = _predictor(propagation=propagation)
    maps, scores = pred(_tokens(shapes, 2), torch.tensor(shapes), masks)
    assert [tuple(m.shape) for m in maps] == [(2, h, w) for h, w in shapes]
    flat_valid = torch.cat([m.flatten(1) for m in masks], dim=1)
    assert scores.shape == flat_valid.shape
    assert torch.isneginf(scores[~flat_valid]).all()
    assert torch.isfinite(scores[flat_valid]).all()
    assert torch.equal(scores[flat_valid], torch.cat([m.flatten(1) for m in maps], 1)[flat_valid])
    for m, v in zip(maps, masks):
        assert (m[~v] == 0).all()
    # A flattened (B, S, dim) input gives the same result.
    maps2, scores2 = pred(torch.cat(_tokens(shapes, 2), dim=1), torch.tensor(shapes), masks)
    assert torch.equal(scores, scores2)


@pytest.mark.parametrize("propagation", ["paper", "official"])
def test_padded_features_do_not_influence_valid_logits(propagation):
    masks = _masks(CANVAS, [CANVAS, SMALL])
    pred = _predictor(propagation=propagation)
    tokens = _tokens(CANVAS, 2)
    _, scores = pred(tokens, torch.tensor(CANVAS), masks)
    changed = []
    for tok, m in zip(tokens, masks):
        t = tok.clone()
        pad = ~m.flatten(1)
        t[pad] = 100.0 * torch.randn(int(pad.sum()), DIM)
        changed.append(t)
    _, scores2 = pred(changed, torch.tensor(CANVAS), masks)
    valid = torch.cat([m.flatten(1) for m in masks], 1)
    assert torch.equal(scores[valid], scores2[valid])


@pytest.mark.parametrize("propagation", ["paper", "official"])
def test_batch_invariance_alone_vs_padded(propagation):
    pred = _predictor(propagation=propagation)
    batch_tokens = _tokens(CANVAS, 2)
    _, scores = pred(batch_tokens, torch.tensor(CANVAS), _masks(CANVAS, [CANVAS, SMALL]))
    # The second image alone, on a canvas equal to its valid size.
    alone = []
    for tok, (H, W), (h, w) in zip(batch_tokens, CANVAS, SMALL):
        alone.append(tok[1:].reshape(1, H, W, DIM)[:, :h, :w].reshape(1, h * w, DIM))
    _, scores_alone = pred(alone, torch.tensor(SMALL), _masks(SMALL, [SMALL]))
    valid = torch.cat([m.flatten(1) for m in _masks(CANVAS, [CANVAS, SMALL])], 1)[1]
    torch.testing.assert_close(scores[1][valid], scores_alone[0], rtol=1e-5, atol=1e-5)


def test_paper_propagation_formula():
    shapes = [(4, 4), (2, 2), (1, 1), (1, 1)]
    masks = _masks(shapes, [shapes])
    tokens = _tokens(shapes, 1)
    no_prop = _predictor(alpha_value=0.0)
    maps0, _ = no_prop(tokens, torch.tensor(shapes), masks)
    for lvl in range(4):
        torch.testing.assert_close(maps0[lvl].flatten(1), no_prop.mlp(tokens[lvl], masks[lvl].flatten(1)))
    half = _predictor(alpha_value=0.5)
    maps, _ = half(tokens, torch.tensor(shapes), masks)
    torch.testing.assert_close(maps[3], maps0[3])
    for lvl in (2, 1, 0):
        expected = maps0[lvl] + 0.5 * upsample_bilinear(maps[lvl + 1], shapes[lvl])
        torch.testing.assert_close(maps[lvl], expected)


def test_official_modulation_is_cancelled_by_layernorm():
    # Documented property of the official design: LN(m * (1 + alpha * s)) == LN(m) while 1 + alpha * s > 0.
    shapes = [(4, 4), (2, 2), (1, 1), (1, 1)]
    masks = _masks(shapes, [shapes])
    tokens = _tokens(shapes, 1)
    torch.manual_seed(0)
    official = SaliencyPredictor(DIM, HIDDEN, 4, alpha_mode="fixed", alpha_value=0.01, propagation="official")
    torch.manual_seed(0)
    plain = SaliencyPredictor(DIM, HIDDEN, 4, alpha_mode="fixed", alpha_value=0.0)
    maps_o, _ = official(tokens, torch.tensor(shapes), masks)
    maps_p, _ = plain(tokens, torch.tensor(shapes), masks)
    for a, b in zip(maps_o, maps_p):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_alpha_modes_parameters_and_gradient():
    shapes = [(4, 4), (2, 2), (1, 1), (1, 1)]
    masks = _masks(shapes, [shapes, [(3, 3), (2, 2), (1, 1), (1, 1)]])
    learn = SaliencyPredictor(dim=DIM, hidden_dim=HIDDEN, num_levels=4, alpha_mode="learnable")
    assert isinstance(learn.alpha, torch.nn.Parameter) and learn.alpha.shape == (3,)
    assert torch.allclose(learn.alpha, torch.full((3,), 0.5))
    maps, _ = learn(_tokens(shapes, 2), torch.tensor(shapes), masks)
    sum(m.sum() for m in maps).backward()
    assert learn.alpha.grad is not None and (learn.alpha.grad != 0).all()

    uniform = SaliencyPredictor(dim=DIM, hidden_dim=HIDDEN, alpha_mode="learnable", alpha_init="uniform")
    assert (uniform.alpha.abs() <= 0.3).all()

    for mode, value in (("fixed", 0.5), ("none", 1.0)):
        p = SaliencyPredictor(dim=DIM, hidden_dim=HIDDEN, num_levels=4, alpha_mode=mode)
        names = [n for n, _ in p.named_parameters()]
        assert not any("alpha" in n for n in names)
        assert torch.equal(p.alpha, torch.full((3,), value))
        assert "alpha" not in p.state_dict()

    with pytest.raises(ValueError, match="alpha_mode"):
        SaliencyPredictor(alpha_mode="adaptive")
    with pytest.raises(ValueError, match="propagation"):
        SaliencyPredictor(propagation="bottom-up")


# ---------------------------------------------------------------------------------------------------- targets
def _one_level(boxes, hw=(8, 8), canvas=None, **kw):
    canvas = canvas or hw
    return saliency_targets(
        [torch.tensor(boxes, dtype=torch.float32)], torch.tensor([canvas]), torch.tensor([[hw]]), **kw
    )[0][0]


def test_gaussian_centre_decay_and_outside():
    # Box centred on token (3, 3) of an 8x8 grid, half-size 2 tokens.
    t = _one_level([[3.5 / 8, 3.5 / 8, 0.5, 0.5]])
    assert t[3, 3] == pytest.approx(1.0)
    row = t[3, 3:].tolist()
    assert row[0] > row[1] > row[2] > 0 and row[3:] == [0.0] * 2
    assert row[2] == pytest.approx(0.5, abs=1e-6)  # edge midpoint, default sigma
    assert t[1, 1] == pytest.approx(0.25, abs=1e-6)  # corner
    assert row[1] == pytest.approx(math.exp(-0.25 / (2 * DEFAULT_GAUSSIAN_SIGMA**2)), abs=1e-6)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[1:6, 1:6] = True
    assert (t[~inside] == 0).all() and (t[inside] > 0).all()
    sharp = _one_level([[3.5 / 8, 3.5 / 8, 0.5, 0.5]], sigma=0.5)
    assert sharp[3, 5] == pytest.approx(math.exp(-2.0), abs=1e-6)


def test_gaussian_max_over_overlapping_boxes():
    a = [0.40, 0.45, 0.5, 0.6]
    b = [0.60, 0.55, 0.4, 0.3]
    both = _one_level([a, b])
    assert torch.equal(both, torch.maximum(_one_level([a]), _one_level([b])))
    assert (_one_level([a]) != _one_level([b])).any()


@pytest.mark.parametrize("mode", ["gaussian", "cone"])
def test_scale_normalised_pattern(mode):
    small = _one_level([[3.5 / 8, 3.5 / 8, 0.5, 0.5]], hw=(8, 8), mode=mode)
    # The same object in an image twice as large: twice the tokens per box side.
    big = _one_level([[7.5 / 16, 7.5 / 16, 0.5, 0.5]], hw=(16, 16), mode=mode)
    for a in range(-2, 3):
        for b in range(-2, 3):
            assert big[7 + 2 * a, 7 + 2 * b] == pytest.approx(float(small[3 + a, 3 + b]), abs=1e-6)
    assert int((big > 0).sum()) == 9 * 9 and int((small > 0).sum()) == 5 * 5


def test_padded_tokens_get_zero_and_valid_part_unchanged():
    box = [[0.9, 0.8, 0.3, 0.5]]  # touches the right/bottom of the valid region
    plain = _one_level(box, hw=(8, 8))
    padded = _one_level(box, hw=(8, 8), canvas=(11, 10))
    assert torch.equal(padded[:8, :8], plain)
    assert (padded[8:] == 0).all() and (padded[:, 8:] == 0).all()


def test_multi_image_multi_level_and_empty():
    shapes = torch.tensor([[8, 8], [4, 4]])
    valid_hw = torch.tensor([[[8, 8], [4, 4]], [[6, 4], [3, 2]]])
    out = saliency_targets([torch.tensor([[0.5, 0.5, 0.5, 0.5]]), torch.zeros(0, 4)], shapes, valid_hw)
    assert [tuple(t.shape) for t in out] == [(2, 8, 8), (2, 4, 4)]
    assert out[0][0].max() > 0 and out[1][0].max() > 0
    assert (out[0][1] == 0).all() and (out[1][1] == 0).all()
    masks = _masks([(8, 8), (4, 4)], [[(8, 8), (4, 4)], [(6, 4), (3, 2)]])
    assert torch.equal(valid_hw_from_masks(masks), valid_hw)


def test_tiny_box_marks_centre_cell():
    tiny = [[0.30, 0.70, 0.02, 0.02]]  # contains no token centre of the 8x8 grid
    t = _one_level(tiny)
    assert t[5, 2] == 1.0 and int((t > 0).sum()) == 1
    assert (_one_level(tiny, always_mark_center=False) == 0).all()
    # A box containing a token centre is not affected by the rule.
    small = [[3.5 / 8, 3.5 / 8, 0.1, 0.1]]
    assert torch.equal(_one_level(small), _one_level(small, always_mark_center=False))


def test_cone_values():
    t = _one_level([[3.5 / 8, 3.5 / 8, 0.5, 0.5]], mode="cone")
    assert t[3, 3] == pytest.approx(1.0)
    assert t[3, 5] == pytest.approx(0.5, abs=1e-6)  # edge midpoint
    assert t[3, 4] == pytest.approx(0.75, abs=1e-6)
    assert t[5, 5] == pytest.approx(1 - 0.5 * math.sqrt(2), abs=1e-6)  # corner
    assert t[3, 6] == 0


def test_cone_level_ranges():
    shapes = torch.tensor([[8, 8], [4, 4]])
    valid_hw = torch.tensor([[[8, 8], [4, 4]]])
    sizes = torch.tensor([[128.0, 128.0]])  # pixels of the (HR) image
    ranges = ((-1.0, 40.0), (40.0, math.inf))
    box = torch.tensor([[0.5, 0.5, 0.25, 0.25]])  # 32 px: max(l,t,r,b) in (16, 32] -> finest level only
    out = saliency_targets([box], shapes, valid_hw, mode="cone", level_ranges=ranges, image_sizes=sizes)
    assert out[0].max() > 0 and (out[1] == 0).all()
    big = torch.tensor([[0.5, 0.5, 0.9, 0.9]])  # max(l,t,r,b) > 57 px -> coarse level only
    out = saliency_targets([big], shapes, valid_hw, mode="cone", level_ranges=ranges, image_sizes=sizes)
    assert (out[0] == 0).all() and out[1].max() > 0
    with pytest.raises(ValueError, match="image_sizes"):
        saliency_targets([big], shapes, valid_hw, mode="cone", level_ranges=ranges)


# ------------------------------------------------------------------------------------------------------- loss
def _hand_focal(x, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-x))
    bce = max(x, 0) - x * t + math.log1p(math.exp(-abs(x)))
    return bce * ((1 - alpha) * p**gamma * (1 - t) + alpha * t * (1 - p) ** gamma)


def test_focal_loss_hand_computation_and_padding():
    xs, ts = [2.0, -1.0, 0.5, 0.0], [1.0, 0.0, 0.5, 0.25]
    expected = sum(_hand_focal(x, t) for x, t in zip(xs, ts)) / 3  # three tokens with t > 0
    logits = torch.tensor([[xs + [7.0]]])  # (1, 1, 5); the last token is padding
    targets = torch.tensor([[ts + [0.0]]])
    mask = torch.tensor([[[True] * 4 + [False]]])
    loss = saliency_loss([logits], [targets], [mask])
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss2 = saliency_loss(
        [logits.clone().index_fill_(2, torch.tensor([4]), -30.0)],
        [targets.clone().index_fill_(2, torch.tensor([4]), 1.0)],
        [mask],
    )
    assert loss2.item() == pytest.approx(expected, rel=1e-6)
    # Split across two levels and half precision logits: same value.
    l2 = saliency_loss(
        [logits[..., :2].half(), logits[..., 2:]],
        [targets[..., :2], targets[..., 2:]],
        [mask[..., :2], mask[..., 2:]],
    )
    assert l2.dtype == torch.float32 and l2.item() == pytest.approx(expected, rel=1e-3)


def test_focal_loss_no_positives_normalises_by_one():
    x = torch.tensor([[[1.0, -2.0]]])
    loss = saliency_loss([x], [torch.zeros_like(x)], [torch.ones_like(x, dtype=torch.bool)])
    assert loss.item() == pytest.approx(_hand_focal(1.0, 0.0) + _hand_focal(-2.0, 0.0), rel=1e-6)


def test_end_to_end_gradient():
    shapes = [(4, 4), (2, 2), (1, 1), (1, 1)]
    masks = _masks(shapes, [shapes, [(3, 2), (2, 1), (1, 1), (1, 1)]])
    pred = SaliencyPredictor(dim=DIM, hidden_dim=HIDDEN, num_levels=4)
    tokens = [t.requires_grad_() for t in _tokens(shapes, 2)]
    maps, _ = pred(tokens, torch.tensor(shapes), masks)
    targets = saliency_targets(
        [torch.tensor([[0.4, 0.4, 0.5, 0.5]]), torch.tensor([[0.5, 0.5, 0.2, 0.2]])],
        torch.tensor(shapes),
        valid_hw_from_masks(masks),
    )
    loss = saliency_loss(maps, targets, masks)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None for p in pred.parameters())
    # Padded tokens receive no gradient.
    assert (tokens[0].grad[1][~masks[0][1].flatten()] == 0).all()
