"""Hierarchical saliency-driven token selection (Eq. 8, Table IX modes)."""

import math

import pytest
import torch

from sdconet.modeling.saliency.token_selection import (
    TokenSelection,
    expected_counts,
    kept_mask,
    select_tokens,
    valid_counts_from_masks,
)

SHAPES = [(6, 8), (3, 4), (2, 2), (1, 1)]
VALID = [SHAPES, [(4, 5), (2, 3), (1, 2), (1, 1)]]  # image 0 unpadded, image 1 padded
BETA = (0.6, 0.8, 1.0, 1.0)
GAMMA = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2)


def _setup(seed=0):
    masks = []
    for lvl, (h, w) in enumerate(SHAPES):
        m = torch.zeros(2, h, w, dtype=torch.bool)
        for b in range(2):
            m[b, : VALID[b][lvl][0], : VALID[b][lvl][1]] = True
        masks.append(m)
    valid = torch.cat([m.flatten(1) for m in masks], dim=1)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(valid.shape, generator=g).masked_fill(~valid, -math.inf)
    shapes = torch.tensor(SHAPES)
    sizes = shapes.prod(1)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return scores, shapes, start, valid_counts_from_masks(masks), valid


def _ref_counts(valid_counts, beta, gamma):
    """Independent plain-Python version of the counting rule."""
    levels, layers = [], []
    for row in valid_counts.tolist():
        n = [max(1, math.floor(b * v + 1e-9)) if v > 0 else 0 for b, v in zip(beta, row)]
        total = sum(n)
        levels.append(n)
        layers.append([max(1, math.floor(g * total + 1e-9)) if total > 0 else 0 for g in gamma])
    return levels, layers


MODES = {
    "none": ((1.0,) * 4, (1.0,) * 6),
    "layer": ((1.0,) * 4, GAMMA),
    "level": (BETA, (1.0,) * 6),
    "joint": (BETA, GAMMA),
}


def test_joint_counts_by_hand():
    _, _, _, vc, _ = _setup()
    assert vc.tolist() == [[48, 12, 4, 1], [20, 6, 2, 1]]
    level, layer = expected_counts(vc, BETA, GAMMA, "joint")
    assert level.tolist() == [[28, 9, 4, 1], [12, 4, 2, 1]]
    assert layer.tolist() == [[42, 33, 25, 25, 16, 8], [19, 15, 11, 11, 7, 3]]


@pytest.mark.parametrize("mode", list(MODES))
def test_selection_per_mode(mode):
    scores, shapes, start, vc, valid = _setup()
    beta, gamma = MODES[mode]
    ref_levels, ref_layers = _ref_counts(vc, beta, gamma)
    out = select_tokens(scores, shapes, start, vc, BETA, GAMMA, mode)
    assert len(out) == len(GAMMA)
    level_of = torch.repeat_interleave(torch.arange(4), shapes.prod(1))
    prev_sets = None
    for i, (idx, counts) in enumerate(out):
        assert counts.tolist() == [r[i] for r in ref_layers]
        assert idx.shape == (2, max(counts.tolist())) and idx.dtype == torch.long
        sets = []
        for b in range(2):
            n = int(counts[b])
            sel = idx[b, :n]
            assert valid[b, sel].all()  # never a padded token
            assert len(set(sel.tolist())) == n  # no duplicates
            s = scores[b, sel]
            assert (s[:-1] >= s[1:]).all()  # sorted by score, descending
            assert (idx[b, n:] == idx[b, 0]).all()  # batch filler repeats the first index
            sets.append(set(sel.tolist()))
            if i == 0:
                # Layer 0 holds exactly the top-n_{b,l} valid tokens of every level.
                for lvl in range(4):
                    in_lvl = sel[level_of[sel] == lvl]
                    assert len(in_lvl) == ref_levels[b][lvl]
                    lvl_scores = scores[b, level_of == lvl]
                    top = lvl_scores.topk(ref_levels[b][lvl]).values
                    assert torch.equal(scores[b, in_lvl].sort(descending=True).values, top)
        if prev_sets is not None:
            assert all(cur <= prev for cur, prev in zip(sets, prev_sets))  # nested across layers
        prev_sets = sets
    if mode == "none":
        for idx, counts in out:
            for b in range(2):
                assert set(idx[b, : counts[b]].tolist()) == set(valid[b].nonzero().flatten().tolist())


def test_kept_mask_and_module():
    scores, shapes, start, vc, valid = _setup(seed=3)
    sel = TokenSelection(BETA, GAMMA, "joint")
    assert sel.num_layers == 6 and not list(sel.parameters())
    out = sel(scores, shapes, start, vc)
    layer_counts = sel.expected_counts(vc)[1]
    for i, (idx, counts) in enumerate(out):
        km = kept_mask(idx, counts, scores.shape[1])
        assert km.shape == scores.shape
        assert km.sum(1).tolist() == counts.tolist() == layer_counts[:, i].tolist()
        assert not (km & ~valid).any()
    # With an explicit valid mask, valid tokens scoring -inf still rank above padding.
    s2 = scores.clone()
    s2[1, valid[1].nonzero()[0, 0]] = -math.inf
    idx, counts = sel(s2, shapes, start, vc, valid_mask=valid)[0]
    assert valid[1, idx[1, : counts[1]]].all()


def test_expected_counts_edge_cases():
    level, layer = expected_counts([1, 0, 100, 3], (0.6, 0.6, 0.29, 1.0), (1.0, 0.1), "joint")
    assert level.tolist() == [1, 0, 29, 3]  # >= 1 when valid > 0, floor is round-off safe
    assert layer.tolist() == [33, 3]
    level, layer = expected_counts(torch.tensor([[0, 0]]), (0.5, 0.5), (0.5,), "joint")
    assert level.tolist() == [[0, 0]] and layer.tolist() == [[0]]


def test_empty_level_in_one_image():
    shapes = torch.tensor([[2, 2], [1, 1]])
    start = torch.tensor([0, 4])
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [0.4, -math.inf, 0.2, -math.inf, -math.inf]])
    vc = torch.tensor([[4, 1], [2, 0]])
    out = select_tokens(scores, shapes, start, vc, (0.5, 1.0), (1.0, 0.5), "joint")
    (i0, c0), (i1, c1) = out
    assert c0.tolist() == [3, 1] and c1.tolist() == [1, 1]
    assert i0[0].tolist() == [1, 4, 2] and i0[1, 0].item() == 0
    assert i1[:, 0].tolist() == [1, 0]


def test_validation_errors():
    scores, shapes, start, vc, _ = _setup()
    for bad in [(0.0, 1.0, 1.0, 1.0), (1.5, 1.0, 1.0, 1.0), (-0.1, 1.0, 1.0, 1.0)]:
        with pytest.raises(ValueError, match="level_ratios"):
            select_tokens(scores, shapes, start, vc, bad, GAMMA, "joint")
    with pytest.raises(ValueError, match="layer_ratios"):
        TokenSelection(BETA, (1.0, 0.0), "joint")
    with pytest.raises(ValueError, match="mode"):
        TokenSelection(BETA, GAMMA, "global")
    with pytest.raises(ValueError, match="level_ratios"):
        select_tokens(scores, shapes, start, vc, (0.5, 0.5), GAMMA, "joint")
    with pytest.raises(ValueError, match="valid_counts"):
        select_tokens(scores, shapes, start, vc + 100, BETA, GAMMA, "joint")
