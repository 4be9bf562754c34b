"""Box ops, focal/L1/GIoU losses, Hungarian matcher and the DINO set criterion."""

import itertools
import math

import pytest
import torch

from sdconet.modeling.box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    elementwise_generalized_box_iou,
    generalized_box_iou,
    inverse_sigmoid,
)
from sdconet.modeling.dino.denoising import CDNQueryGenerator
from sdconet.modeling.losses.criterion import SetCriterion
from sdconet.modeling.losses.functional import l1_and_giou, sigmoid_focal_loss
from sdconet.modeling.losses.matcher import HungarianMatcher


# ---------------------------------------------------------------------------------------------- box ops
def test_box_conversions_and_area():
    cxcywh = torch.tensor([[0.5, 0.4, 0.2, 0.6], [0.1, 0.9, 0.0, 0.2]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    torch.testing.assert_close(xyxy, torch.tensor([[0.4, 0.1, 0.6, 0.7], [0.1, 0.8, 0.1, 1.0]]))
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), cxcywh)
    torch.testing.assert_close(box_area(xyxy), torch.tensor([0.12, 0.0]))


def test_iou_and_giou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [3.0, 0.0, 4.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    iou = box_iou(a, b)
    torch.testing.assert_close(iou, torch.tensor([[1 / 7, 0.0, 1.0]]))
    giou = generalized_box_iou(a, b)
    # overlap: hull 3x3=9, union 7; disjoint: hull 4x2=8, union 5
    torch.testing.assert_close(giou, torch.tensor([[1 / 7 - 2 / 9, -3 / 8, 1.0]]))
    torch.testing.assert_close(elementwise_generalized_box_iou(a.expand(3, 4), b), giou[0])
    # tiny boxes (remote sensing): a perfect match stays exactly 1 (no additive epsilon bias)
    tiny = torch.tensor([[0.5, 0.5, 0.5 + 1e-3, 0.5 + 1e-3]])
    assert float(generalized_box_iou(tiny, tiny)) == pytest.approx(1.0, abs=1e-6)


def test_giou_rejects_invalid_boxes():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    bad = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.4, 0.9]])
    with pytest.raises(ValueError, match="boxes2.*index 1"):
        generalized_box_iou(good, bad)
    with pytest.raises(ValueError, match="boxes1"):
        generalized_box_iou(torch.tensor([[float("nan"), 0, 1, 1]]), good)


def test_inverse_sigmoid():
    x = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(inverse_sigmoid(x).sigmoid(), x)
    ends = inverse_sigmoid(torch.tensor([0.0, 1.0, -2.0]))
    torch.testing.assert_close(ends, torch.tensor([math.log(1e-3), math.log(1e3), math.log(1e-3)]))


# ---------------------------------------------------------------------------------------------- losses
def test_focal_loss_hand_values():
    logits = torch.tensor([[0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0]])
    # p = 0.5: positive 0.25 * 0.5^2 * log 2, negative 0.75 * 0.5^2 * log 2
    expected = (0.25 + 0.75) * 0.25 * math.log(2) / 2.0
    assert float(sigmoid_focal_loss(logits, targets, num_boxes=2.0)) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_matches_formula_and_sums():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64) * 3
    targets = (torch.rand(2, 5, 3, generator=gen) < 0.3).double()
    p = logits.sigmoid()
    ce = -(targets * p.log() + (1 - targets) * (1 - p).log())
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = 0.25 * targets + 0.75 * (1 - targets)
    expected = (a_t * (1 - p_t) ** 2 * ce).sum() / 3.0
    got = sigmoid_focal_loss(logits.bfloat16(), targets, 3.0)
    assert got.dtype == torch.float32
    got64 = sigmoid_focal_loss(logits, targets, 3.0)
    assert float(got64) == pytest.approx(float(expected), rel=1e-5)
    assert float(got) == pytest.approx(float(expected), rel=5e-2)


def test_l1_and_giou_values():
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]], requires_grad=True)
    tgt = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.4, 0.3, 0.2, 0.2]])
    loss_bbox, loss_giou = l1_and_giou(pred, tgt, num_boxes=2.0)
    assert loss_bbox.item() == pytest.approx(0.1 / 2, abs=1e-6)
    # second pair: boxes [0.2,0.2,0.4,0.4] vs [0.3,0.2,0.5,0.4]: inter 0.02, union 0.06, hull 0.06
    assert loss_giou.item() == pytest.approx((1 - 1 / 3) / 2, abs=1e-6)
    (loss_bbox + loss_giou).backward()
    assert torch.isfinite(pred.grad).all()
    empty_b, empty_g = l1_and_giou(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4), 1.0)
    assert empty_b.item() == 0.0 and empty_g.item() == 0.0 and empty_b.requires_grad


# ---------------------------------------------------------------------------------------------- matcher
def _reference_cost(logits, boxes, labels, tgt_boxes, wc=2.0, wb=5.0, wg=2.0, alpha=0.25, gamma=2.0):
    """Independent float64 cost (DINO formula with exact logs)."""
    p = logits.double().sigmoid()
    pos = alpha * (1 - p) ** gamma * -(p.log())
    neg = (1 - alpha) * p**gamma * -((1 - p).log())
    c_cls = (pos - neg)[:, labels]
    c_l1 = (boxes.double()[:, None, :] - tgt_boxes.double()[None, :, :]).abs().sum(-1)
    c_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes.double()), box_cxcywh_to_xyxy(tgt_boxes.double()))
    return wc * c_cls + wb * c_l1 + wg * c_giou


def _brute_force_min(cost):
    q, n = cost.shape
    if n == 0:
        return 0.0
    if q >= n:
        return min(
            sum(float(cost[perm[j], j]) for j in range(n)) for perm in itertools.permutations(range(q), n)
        )
    return min(sum(float(cost[i, perm[i]]) for i in range(q)) for perm in itertools.permutations(range(n), q))


def _random_boxes(n, gen):
    centre = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([centre, size], -1)


@pytest.mark.parametrize("q,n", [(4, 0), (4, 1), (5, 3), (6, 4), (3, 3), (2, 4)])
def test_matcher_equals_brute_force(q, n):
    gen = torch.Generator().manual_seed(10 * q + n)
    num_classes = 3
    matcher = HungarianMatcher()
    sizes = (n, max(n - 1, 0))  # the second image has one object fewer (none when n <= 1)
    for _ in range(12):  # enough random cases that a wrong cost weight or sign is caught
        logits = torch.randn(2, q, num_classes, generator=gen) * 2
        boxes = _random_boxes(2 * q, gen).view(2, q, 4)
        targets = [
            {"labels": torch.randint(0, num_classes, (k,), generator=gen), "boxes": _random_boxes(k, gen)}
            for k in sizes
        ]
        indices = matcher(logits, boxes, targets)
        assert len(indices) == 2
        for b, (src, tgt) in enumerate(indices):
            k = sizes[b]
            assert src.dtype == torch.int64 and tgt.dtype == torch.int64
            assert len(src) == len(tgt) == min(q, k)
            assert len(set(src.tolist())) == len(src) and len(set(tgt.tolist())) == len(tgt)
            cost = _reference_cost(logits[b], boxes[b], targets[b]["labels"], targets[b]["boxes"])
            got = float(cost[src, tgt].sum()) if k else 0.0
            assert got == pytest.approx(_brute_force_min(cost), abs=1e-6)


def test_matcher_survives_non_finite_and_low_precision():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 5, 2, generator=gen)
    logits[0, 1, 0] = float("nan")
    logits[0, 2, 1] = float("inf")
    boxes = _random_boxes(5, gen)[None]
    boxes[0, 3] = float("nan")
    targets = [{"labels": torch.tensor([0, 1]), "boxes": _random_boxes(2, gen)}]
    src, tgt = HungarianMatcher()(logits, boxes, targets)[0]
    assert len(src) == 2
    src16, _ = HungarianMatcher()(logits.half(), boxes.bfloat16(), targets)[0]
    assert len(src16) == 2


def test_matcher_rejects_bad_targets():
    logits, boxes = torch.zeros(1, 3, 2), torch.full((1, 3, 4), 0.5)
    with pytest.raises(ValueError, match="labels"):
        HungarianMatcher()(
            logits, boxes, [{"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}]
        )
    with pytest.raises(ValueError, match="targets\\[0\\]"):
        HungarianMatcher()(
            logits, boxes, [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, -0.1, 0.1]])}]
        )


# ---------------------------------------------------------------------------------------------- criterion
NUM_CLASSES, K, NUM_AUX, DIM = 3, 6, 2, 8


def _targets(with_gt=True):
    if not with_gt:
        return [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)} for _ in range(2)]
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]


def _leaf(*shape, gen, boxes=False):
    t = torch.rand(*shape, generator=gen) * 0.5 + 0.25 if boxes else torch.randn(*shape, generator=gen)
    return t.requires_grad_(True)


def _outputs(gen, nd=0):
    def one(n):
        return {
            "pred_logits": _leaf(2, n, NUM_CLASSES, gen=gen),
            "pred_boxes": _leaf(2, n, 4, gen=gen, boxes=True),
        }

    out = one(K)
    out["aux_outputs"] = [one(K) for _ in range(NUM_AUX)]
    out["enc_outputs"] = one(K)
    if nd:
        out["dn_outputs"] = one(nd)
        out["dn_outputs"]["aux_outputs"] = [one(nd) for _ in range(NUM_AUX)]
    else:
        out["dn_outputs"] = None
    return out


def _criterion(**kw):
    return SetCriterion(
        NUM_CLASSES, HungarianMatcher(), with_dn=True, num_aux_layers=NUM_AUX, with_enc=True, **kw
    )


def _leaves(outputs):
    sets = [outputs, outputs["enc_outputs"], *outputs["aux_outputs"]]
    if outputs["dn_outputs"] is not None:
        sets += [outputs["dn_outputs"], *outputs["dn_outputs"]["aux_outputs"]]
    return [s[k] for s in sets for k in ("pred_logits", "pred_boxes")]


def test_criterion_same_keys_with_and_without_gt_and_backward():
    gen = torch.Generator().manual_seed(0)
    crit = _criterion()
    dn = CDNQueryGenerator(NUM_CLASSES, DIM, dn_number=4)
    targets = _targets(True)
    dn_q = dn(targets, num_queries=K, generator=torch.Generator().manual_seed(1))
    outputs = _outputs(gen, nd=dn_q.dn_meta.pad_size)
    losses = crit(outputs, targets, dn_q.dn_meta)
    empty_outputs = _outputs(gen)
    empty_losses = crit(empty_outputs, _targets(False), dn(_targets(False), num_queries=K))
    assert list(losses) == list(empty_losses) == crit.loss_keys()
    assert "loss_class_dn_1" in losses and "loss_giou_enc" in losses and "loss_bbox_1" in losses
    assert len(losses) == 3 * (1 + NUM_AUX + 1 + 1 + NUM_AUX)
    for result, outs in ((losses, outputs), (empty_losses, empty_outputs)):
        assert all(torch.isfinite(v) and v.requires_grad for v in result.values())
        sum(result.values()).backward()
        assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in _leaves(outs))
    assert empty_losses["loss_class_dn"].item() == 0.0 and empty_losses["loss_bbox"].item() == 0.0
    assert empty_losses["loss_class"].item() > 0.0  # every query is background


def test_criterion_perfect_predictions_give_zero_box_losses():
    gen = torch.Generator().manual_seed(1)
    targets = _targets(True)
    outputs = _outputs(gen)
    for out in [outputs, outputs["enc_outputs"], *outputs["aux_outputs"]]:
        with torch.no_grad():
            out["pred_logits"].fill_(-10.0)
            for b, t in enumerate(targets):
                n = len(t["labels"])
                out["pred_boxes"][b, 2 : 2 + n] = t["boxes"]
                out["pred_logits"][b, 2 + torch.arange(n), t["labels"]] = 10.0
    crit = SetCriterion(NUM_CLASSES, HungarianMatcher(), with_dn=False, num_aux_layers=NUM_AUX, with_enc=True)
    losses = crit(outputs, targets)
    assert not any("_dn" in k for k in losses)
    for k, v in losses.items():
        limit = 1e-3 if k.startswith("loss_class") else 1e-5
        assert v.item() < limit, (k, v.item())


def test_criterion_dn_loss_uses_fixed_positives_and_group_normaliser():
    gen = torch.Generator().manual_seed(2)
    targets = _targets(True)
    dn = CDNQueryGenerator(NUM_CLASSES, DIM, dn_number=4)  # M = 2 -> G = 2, Nd = 8
    meta = dn(targets, num_queries=K).dn_meta
    assert (meta.num_groups, meta.pad_size, meta.max_gt) == (2, 8, 2)
    outputs = _outputs(gen, nd=8)
    crit = _criterion(weight_class=1.5, weight_bbox=5.0, weight_giou=2.0)
    losses = crit(outputs, targets, meta)
    dn_out = outputs["dn_outputs"]
    onehot = torch.zeros(2, 8, NUM_CLASSES)
    pred, tgt = [], []
    for b, t in enumerate(targets):
        for g in range(2):
            for j in range(len(t["labels"])):
                onehot[b, g * 4 + j, t["labels"][j]] = (
                    1.0  # positives at g*2M + j; negatives/padding background
                )
                pred.append(dn_out["pred_boxes"][b, g * 4 + j])
                tgt.append(t["boxes"][j])
    norm = 3.0 * 2  # num_boxes (3 GT in the batch) x G
    expected_cls = 1.5 * sigmoid_focal_loss(dn_out["pred_logits"], onehot, norm)
    exp_bbox, exp_giou = l1_and_giou(torch.stack(pred), torch.stack(tgt), norm)
    torch.testing.assert_close(losses["loss_class_dn"], expected_cls)
    torch.testing.assert_close(losses["loss_bbox_dn"], 5.0 * exp_bbox)
    torch.testing.assert_close(losses["loss_giou_dn"], 2.0 * exp_giou)


def test_criterion_validates_configuration():
    gen = torch.Generator().manual_seed(3)
    targets = _targets(True)
    meta = CDNQueryGenerator(NUM_CLASSES, DIM, dn_number=4)(targets, num_queries=K).dn_meta
    no_dn = SetCriterion(NUM_CLASSES, HungarianMatcher(), with_dn=False, num_aux_layers=NUM_AUX)
    with pytest.raises(ValueError, match="with_dn=False"):
        no_dn(_outputs(gen, nd=8), targets, meta)
    with pytest.raises(ValueError, match="aux_outputs"):
        SetCriterion(NUM_CLASSES, HungarianMatcher(), with_dn=False, num_aux_layers=1)(_outputs(gen), targets)
    bad = [{"labels": torch.tensor([5]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}, targets[1]]
    with pytest.raises(ValueError, match="targets\\[0\\]\\['labels'\\]"):
        _criterion()(_outputs(gen), bad)
