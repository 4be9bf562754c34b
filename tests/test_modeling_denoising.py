"""Contrastive denoising (CDN) queries: group arithmetic, attention mask, noise, fixed positive assignment."""

import pytest
import torch

from sdconet.modeling.box_ops import box_cxcywh_to_xyxy
from sdconet.modeling.dino.denoising import CDNQueryGenerator, cdn_box_noise, dn_attention_mask

C, D = 5, 16


def _targets(counts, gen=None):
    gen = gen or torch.Generator().manual_seed(0)
    out = []
    for n in counts:
        centre = torch.rand(n, 2, generator=gen) * 0.4 + 0.3
        size = torch.rand(n, 2, generator=gen) * 0.1 + 0.1
        out.append(
            {"labels": torch.randint(0, C, (n,), generator=gen), "boxes": torch.cat([centre, size], -1)}
        )
    return out


def test_groups_and_pad_size():
    dn = CDNQueryGenerator(C, D, dn_number=100)
    q = dn(_targets([3, 1]), num_queries=7)
    assert (q.dn_meta.max_gt, q.dn_meta.num_groups, q.dn_meta.pad_size) == (3, 33, 198)
    assert q.dn_content.shape == (2, 198, D) and q.dn_refs_unsig.shape == (2, 198, 4)
    assert q.attn_mask.shape == (205, 205) and q.attn_mask.dtype == torch.bool
    q = CDNQueryGenerator(C, D, dn_number=2)(_targets([3, 1]), num_queries=7)
    assert (q.dn_meta.num_groups, q.dn_meta.pad_size) == (1, 6)  # at least one group


def test_no_dn_without_ground_truth_or_budget():
    assert CDNQueryGenerator(C, D)(_targets([0, 0]), num_queries=5) is None
    assert CDNQueryGenerator(C, D, dn_number=0)(_targets([2]), num_queries=5) is None


def test_attention_mask_matches_reference_example():
    # M = 2, G = 3, K = 4 (1 = blocked), from the DINO fact sheet
    rows = (
        ["0000111111110000"] * 4
        + ["1111000011110000"] * 4
        + ["1111111100000000"] * 4
        + ["1111111111110000"] * 4
    )
    expected = torch.tensor([[c == "1" for c in r] for r in rows])
    assert torch.equal(dn_attention_mask(12, 4, 4, torch.device("cpu")), expected)
    q = CDNQueryGenerator(C, D, dn_number=6)(_targets([2, 1]), num_queries=4)
    assert (q.dn_meta.max_gt, q.dn_meta.num_groups) == (2, 3)
    assert torch.equal(q.attn_mask, expected)


def test_box_noise_magnitudes():
    gen = torch.Generator().manual_seed(1)
    boxes = _targets([500], gen)[0]["boxes"]  # interior boxes: no clamping at [0, 1]
    is_neg = torch.arange(500) % 2 == 1
    noisy = cdn_box_noise(boxes, is_neg, 1.0, generator=gen)
    moved = (box_cxcywh_to_xyxy(noisy) - box_cxcywh_to_xyxy(boxes)).abs()
    half = torch.cat([boxes[:, 2:], boxes[:, 2:]], -1) * 0.5
    ratio = moved / half
    tol = 1e-4
    assert (ratio[~is_neg] < 1 + tol).all()  # positives: within half the box size
    assert (ratio[is_neg] > 1 - tol).all() and (ratio[is_neg] < 2 + tol).all()  # negatives: farther
    assert ratio[~is_neg].max() > 0.9 and ratio[is_neg].max() > 1.9  # the ranges are actually used
    half_scale = cdn_box_noise(boxes, is_neg, 0.5, generator=gen)
    ratio_half = (box_cxcywh_to_xyxy(half_scale) - box_cxcywh_to_xyxy(boxes)).abs() / half
    assert (ratio_half[~is_neg] < 0.5 + tol).all()


def test_queries_content_refs_and_positive_indices():
    targets = _targets([3, 1])
    dn = CDNQueryGenerator(C, D, dn_number=6, label_noise_ratio=0.0)  # M = 3, G = 2, group size 6
    q = dn(targets, num_queries=4, generator=torch.Generator().manual_seed(2))
    meta = q.dn_meta
    for b, t in enumerate(targets):
        n = len(t["labels"])
        for g in range(meta.num_groups):
            for slot in range(6):
                row = g * 6 + slot
                j = slot % 3
                if j < n:  # positive (slot < M) or negative with a real ground truth
                    torch.testing.assert_close(q.dn_content[b, row], dn.label_enc.weight[t["labels"][j]])
                else:  # padding: zero content, reference logit 0
                    assert torch.count_nonzero(q.dn_content[b, row]) == 0
                    assert torch.count_nonzero(q.dn_refs_unsig[b, row]) == 0
        # positives: noised centre stays within half the box size
        pos_rows = [g * 6 + j for g in range(meta.num_groups) for j in range(n)]
        ref = q.dn_refs_unsig[b, pos_rows].sigmoid()
        gt = t["boxes"].repeat(meta.num_groups, 1)
        assert ((ref[:, :2] - gt[:, :2]).abs() <= gt[:, 2:] * 0.5 + 1e-4).all()
        assert (ref[:, 2:] <= gt[:, 2:] * 2 + 1e-4).all()
    pairs = meta.positive_indices()
    assert pairs[0][0].tolist() == [0, 1, 2, 6, 7, 8] and pairs[0][1].tolist() == [0, 1, 2, 0, 1, 2]
    assert pairs[1][0].tolist() == [0, 6] and pairs[1][1].tolist() == [0, 0]
    assert meta.num_dn_gt == 4


def test_label_noise_rate():
    targets = [{"labels": torch.zeros(100, dtype=torch.int64), "boxes": torch.full((100, 4), 0.3)}]
    dn = CDNQueryGenerator(C, D, dn_number=1000, label_noise_ratio=1.0, box_noise_scale=0.0)
    q = dn(targets, num_queries=1, generator=torch.Generator().manual_seed(3))  # G = 10, 2000 queries
    changed = (q.dn_content[0] - dn.label_enc.weight[0]).abs().sum(-1) > 0
    # re-drawn with probability 0.5, and a re-draw keeps class 0 with probability 1/C
    assert 0.5 * (1 - 1 / C) - 0.05 < changed.float().mean() < 0.5 * (1 - 1 / C) + 0.05


def test_cap_uses_random_subset_and_correct_targets():
    targets = _targets([5, 2])
    dn = CDNQueryGenerator(C, D, dn_number=4, label_noise_ratio=0.0, box_noise_scale=0.0, max_gt_for_dn=2)
    q = dn(targets, num_queries=3, generator=torch.Generator().manual_seed(4))
    meta = q.dn_meta
    assert (meta.max_gt, meta.num_groups, meta.pad_size) == (2, 2, 8)
    chosen = meta.gt_indices[0].tolist()
    assert len(chosen) == 2 and len(set(chosen)) == 2 and all(0 <= i < 5 for i in chosen)
    for b in range(2):
        pred_idx, tgt_idx = meta.positive_indices()[b]
        torch.testing.assert_close(
            q.dn_refs_unsig[b, pred_idx].sigmoid(), targets[b]["boxes"][tgt_idx], atol=1e-5, rtol=0
        )
    assert meta.num_dn_gt == 4


def test_generator_reproducible_and_label_check():
    targets = _targets([2, 3])
    dn = CDNQueryGenerator(C, D)
    a = dn(targets, 4, generator=torch.Generator().manual_seed(5))
    b = dn(targets, 4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.dn_refs_unsig, b.dn_refs_unsig)
    torch.testing.assert_close(a.dn_content, b.dn_content)
    bad = [{"labels": torch.tensor([C]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}]
    with pytest.raises(ValueError, match="labels"):
        dn(bad, 4)
    with pytest.raises(ValueError, match="max_gt_for_dn"):
        CDNQueryGenerator(C, D, max_gt_for_dn=0)
