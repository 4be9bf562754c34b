"""Hierarchical saliency-driven token selection (paper Sec. III-D-3, Eq. 8; ablation modes of Table IX).

Per image ``b`` with ``valid_{b,l}`` valid tokens at level ``l``:

1. level budget ``n_{b,l} = floor(beta_l * valid_{b,l})``, raised to 1 when ``valid_{b,l} > 0`` (every level
   with tokens keeps at least one); ``sel_b`` = the top-``n_{b,l}`` valid tokens of every level by saliency
   score, concatenated and sorted by score, descending.
2. encoder layer ``i`` keeps the prefix of ``sel_b`` of length ``m_{b,i} = floor(gamma_i * |sel_b|)``, raised
   to 1 when ``|sel_b| > 0``. The index sets of all layers are prefixes of one list, so they are nested
   whenever gamma is non-increasing (the paper's (1.0, 0.8, 0.6, 0.6, 0.4, 0.2) is).

Products ``ratio * count`` are floored in float64 with a 1e-9 tolerance, so e.g. ``0.29 * 100`` gives 29.

Modes: ``"none"`` beta = gamma = 1 (all valid tokens in every layer); ``"layer"`` beta = 1; ``"level"`` gamma
= 1; ``"joint"`` both (paper default).

Batching without host synchronisation: layer ``i`` returns ``indices (B, N_i)`` and ``counts (B,)``, where
``N_i`` is the budget of an image without padding at the padded size (Python ints from the level shapes, see
``static_budgets``), so every shape is fixed by the input size. Only the first ``counts[b]`` entries of row
``b`` are real (a rank mask); the rest repeat the row's first index so that gathering stays valid. **The caller
must scatter back only the first ``counts[b]`` updated tokens of image ``b``** (see ``kept_mask``).
"""

from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..level_shapes import Shapes, as_shape_list, level_sizes, level_starts

logger = logging.getLogger(__name__)

FILTER_MODES = ("none", "layer", "level", "joint")
#: Paper values: pyramid-level ratios beta (finest level first) and encoder-layer ratios gamma.
DEFAULT_LEVEL_RATIOS = (0.6, 0.8, 1.0, 1.0)
DEFAULT_LAYER_RATIOS = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2)
#: Tolerance added before flooring ratio * count, so float round-off never drops a token (0.29 * 100 -> 29).
_FLOOR_TOL = 1e-9


def _check(level_ratios: Sequence[float], layer_ratios: Sequence[float], mode: str) -> None:
    if mode not in FILTER_MODES:
        raise ValueError(f"token selection: mode must be one of {FILTER_MODES} (got {mode!r})")
    for name, ratios in (("level_ratios", level_ratios), ("layer_ratios", layer_ratios)):
        if len(ratios) == 0:
            raise ValueError(f"token selection: {name} must not be empty")
        bad = [r for r in ratios if not 0.0 < float(r) <= 1.0]
        if bad:
            raise ValueError(f"token selection: {name} must lie in (0, 1], got {tuple(ratios)} (bad: {bad})")


def effective_ratios(
    level_ratios: Sequence[float], layer_ratios: Sequence[float], mode: str
) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The (beta, gamma) actually used by ``mode`` (validated); lengths are kept."""
    _check(level_ratios, layer_ratios, mode)
    beta = tuple(float(r) for r in level_ratios) if mode in ("level", "joint") else (1.0,) * len(level_ratios)
    gamma = (
        tuple(float(r) for r in layer_ratios) if mode in ("layer", "joint") else (1.0,) * len(layer_ratios)
    )
    return beta, gamma


def _keep(ratio: float, n: torch.Tensor) -> torch.Tensor:
    """floor(ratio * n), at least 1 where n > 0 (long tensor of n's shape)."""
    k = (n.double() * ratio + _FLOOR_TOL).floor().long()
    return torch.where(n > 0, k.clamp(min=1), torch.zeros_like(k))


def _keep_int(ratio: float, n: int) -> int:
    """:func:`_keep` for a Python int (the same float64 arithmetic)."""
    return max(1, math.floor(n * ratio + _FLOOR_TOL)) if n > 0 else 0


def _counts(
    valid: torch.Tensor, beta: Sequence[float], gamma: Sequence[float]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-level and per-layer budgets of ``valid (..., L)`` valid-token counts (on its device, no checks)."""
    level = torch.stack([_keep(b, valid[..., i]) for i, b in enumerate(beta)], dim=-1)
    total = level.sum(dim=-1)
    layer = torch.stack([_keep(g, total) for g in gamma], dim=-1)
    return level, layer


def expected_counts(
    valid_counts: Union[torch.Tensor, Sequence],
    level_ratios: Sequence[float] = DEFAULT_LEVEL_RATIOS,
    layer_ratios: Sequence[float] = DEFAULT_LAYER_RATIOS,
    mode: str = "joint",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Number of tokens kept per level and per encoder layer (the exact counts ``select_tokens`` produces).

    Args:
        valid_counts: long ``(B, L)`` (or ``(L,)`` for one image; a nested list is accepted) valid tokens per
        level.
        level_ratios: beta, one per level.
        layer_ratios: gamma, one per encoder layer.
        mode: one of ``FILTER_MODES``.

    Returns:
        ``(level_counts (..., L), layer_counts (..., num_layers))`` long tensors; ``layer_counts[..., i]`` is
        the number of tokens encoder layer ``i`` updates.
    """
    beta, gamma = effective_ratios(level_ratios, layer_ratios, mode)
    valid = torch.as_tensor(valid_counts).long()
    if valid.shape[-1:] != (len(beta),) or valid.dim() not in (1, 2):
        raise ValueError(
            f"expected_counts: valid_counts must have shape (B, {len(beta)}) or ({len(beta)},), "
            f"got {tuple(valid.shape)}"
        )
    if (valid < 0).any():
        raise ValueError("expected_counts: valid_counts must be non-negative")
    return _counts(valid, beta, gamma)


def static_budgets(
    spatial_shapes: Shapes,
    level_ratios: Sequence[float] = DEFAULT_LEVEL_RATIOS,
    layer_ratios: Sequence[float] = DEFAULT_LAYER_RATIOS,
    mode: str = "joint",
) -> Tuple[List[int], List[int]]:
    """Largest per-level and per-layer budgets at a padded size (those of an image without padding).

    These Python ints fix the shapes of :func:`select_tokens`'s outputs; they depend only on the padded input
    size, never on tensor values.
    """
    beta, gamma = effective_ratios(level_ratios, layer_ratios, mode)
    level = [_keep_int(b, n) for b, n in zip(beta, level_sizes(spatial_shapes))]
    total = sum(level)
    return level, [_keep_int(g, total) for g in gamma]


def valid_counts_from_masks(valid_masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Valid tokens per image and level from L bool ``(B, H_l, W_l)`` masks (True = valid) -> ``(B, L)``."""
    return torch.stack([m.flatten(1).sum(dim=1) for m in valid_masks], dim=1).long()


def kept_mask(indices: torch.Tensor, counts: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """bool ``(B, S)``: True at the first ``counts[b]`` entries of ``indices[b]`` (tokens a layer updates)."""
    b, n = indices.shape
    real = torch.arange(n, device=indices.device)[None, :] < counts[:, None]
    target = torch.where(real, indices, torch.full_like(indices, num_tokens))  # filler -> dummy slot S
    mask = torch.zeros(b, num_tokens + 1, dtype=torch.bool, device=indices.device)
    mask.scatter_(1, target, torch.ones_like(target, dtype=torch.bool))
    return mask[:, :num_tokens]


def _stable_partition(values: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Rows of ``values`` with the entries where ``first`` is True moved to the front, order kept on both sides.

    The same as a stable sort on ``~first`` but O(N) and without a sort op (cumsum + scatter: exports to ONNX).
    """
    first_l = first.long()
    n_first = first_l.sum(dim=1, keepdim=True)
    pos = torch.where(first, first_l.cumsum(1) - 1, n_first + (1 - first_l).cumsum(1) - 1)
    return torch.empty_like(values).scatter_(1, pos, values)


def select_tokens(
    scores: torch.Tensor,
    spatial_shapes: Shapes,
    level_start_index: Union[torch.Tensor, Sequence[int], None],
    valid_counts: torch.Tensor,
    level_ratios: Sequence[float] = DEFAULT_LEVEL_RATIOS,
    layer_ratios: Sequence[float] = DEFAULT_LAYER_RATIOS,
    mode: str = "joint",
    valid_mask: Optional[torch.Tensor] = None,
    check_values: bool = True,
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Pick the tokens each encoder layer updates (no gradient flows through the selection).

    Sync-free: every output shape follows from the padded level shapes (Python ints), each image's own budget
    is a rank mask (its ``counts``), so the selection has no host synchronisation and compiles into one graph.

    Args:
        scores: ``(B, S)`` saliency scores in token order (finest level first, row-major), ``-inf`` at padded
            tokens (``SaliencyPredictor`` output). Valid tokens must score above ``-inf`` unless
            ``valid_mask`` is given.
        spatial_shapes: long ``(L, 2)`` ``(H_l, W_l)``, or L pairs of Python ints (no host synchronisation).
        level_start_index: ``(L,)`` exclusive cumsum of ``H_l * W_l`` (tensor or ints), or None (derived).
        valid_counts: long ``(B, L)`` valid tokens per image and level (``valid_counts_from_masks``).
        level_ratios: beta per level, in (0, 1].
        layer_ratios: gamma per encoder layer, in (0, 1]; its length is the number of encoder layers.
        mode: ``"none"``, ``"layer"``, ``"level"`` or ``"joint"``.
        valid_mask: optional bool ``(B, S)``, True = valid; if given, padded tokens are excluded by the mask
            (and valid tokens with ``-inf``/NaN scores still rank above them).
        check_values: check that ``valid_counts`` lie in ``[0, H_l * W_l]`` (a host synchronisation; skipped
            under ``torch.compile``). The model passes False: its counts come from the padding mask.

    Returns:
        one ``(indices (B, N_i) long, counts (B,) long)`` per encoder layer. ``N_i`` is the layer's budget
        for an image without padding at this padded size (:func:`static_budgets`), so it depends only on the
        input size. Row ``b`` of ``indices`` lists tokens by descending score; only its first ``counts[b]``
        entries are selected (the rank mask ``arange(N_i) < counts[b]``); the rest repeat the first index and
        must not be written back (send them to a dummy slot, see ``kept_mask``).
    """
    shapes = as_shape_list(spatial_shapes)
    sizes = [h * w for h, w in shapes]
    if level_start_index is None:
        starts = level_starts(shapes)
    elif isinstance(level_start_index, torch.Tensor):
        starts = [int(s) for s in level_start_index.tolist()]
    else:
        starts = [int(s) for s in level_start_index]
    batch, num_tokens = scores.shape
    if len(starts) != len(shapes) or sum(sizes) != num_tokens:
        raise ValueError(
            f"select_tokens: scores have S={num_tokens} tokens but spatial_shapes {shapes} give {sum(sizes)} "
            f"(level_start_index {starts})"
        )
    if tuple(valid_counts.shape) != (batch, len(shapes)):
        raise ValueError(
            f"select_tokens: valid_counts must be (B={batch}, L={len(shapes)}), "
            f"got {tuple(valid_counts.shape)}"
        )
    if len(level_ratios) != len(shapes):
        raise ValueError(
            f"select_tokens: level_ratios needs {len(shapes)} entries, got {tuple(level_ratios)}"
        )
    beta, gamma = effective_ratios(level_ratios, layer_ratios, mode)
    if check_values and not torch.compiler.is_compiling():
        if (valid_counts > torch.as_tensor(sizes, device=valid_counts.device)).any():
            raise ValueError(f"select_tokens: valid_counts exceed the level sizes {sizes}")
        if (valid_counts < 0).any():
            raise ValueError("select_tokens: valid_counts must be non-negative")
    level_k, layer_n = static_budgets(shapes, level_ratios, layer_ratios, mode)
    level_counts, layer_counts = _counts(valid_counts.long(), beta, gamma)  # per image, on the device
    device = scores.device

    key = scores.detach().float()
    if valid_mask is not None:
        lowest = torch.finfo(key.dtype).min
        key = torch.where(valid_mask.bool(), torch.nan_to_num(key, nan=lowest, neginf=lowest), float("-inf"))
    else:
        key = torch.nan_to_num(key, nan=float("-inf"))

    picked_idx, picked_val, picked_ok = [], [], []
    for lvl, (start, size, k) in enumerate(zip(starts, sizes, level_k)):
        if k == 0:
            continue
        val, idx = key[:, start : start + size].topk(k, dim=1, sorted=True)
        picked_idx.append(idx + start)
        picked_val.append(val)
        picked_ok.append(torch.arange(k, device=device)[None, :] < level_counts[:, lvl, None])
    if picked_idx:
        idx = torch.cat(picked_idx, dim=1)
        val = torch.cat(picked_val, dim=1)
        ok = torch.cat(picked_ok, dim=1)
        # Score-descending, then real picks before the slots beyond an image's own budget (stable: ties keep
        # level order, so the real picks come out in the same order whatever the padded size).
        order = torch.sort(val, dim=1, descending=True, stable=True).indices
        idx, ok = idx.gather(1, order), ok.gather(1, order)
        ranked = _stable_partition(idx, ok)
    else:
        ranked = torch.zeros(batch, 0, dtype=torch.long, device=device)

    out = []
    for i, n in enumerate(layer_n):
        counts = layer_counts[:, i]
        ind = ranked[:, :n]
        if n > 0:
            real = torch.arange(n, device=device)[None, :] < counts[:, None]
            ind = torch.where(real, ind, ranked[:, :1])
        out.append((ind, counts))
    return out


class TokenSelection(nn.Module):
    """Holds the validated ratios and mode and applies ``select_tokens`` (no parameters).

    Args:
        level_ratios: beta per feature level (finest first), in (0, 1].
        layer_ratios: gamma per encoder layer, in (0, 1].
        mode: ``"none"``, ``"layer"``, ``"level"`` or ``"joint"`` (Table IX).
    """

    def __init__(
        self,
        level_ratios: Sequence[float] = DEFAULT_LEVEL_RATIOS,
        layer_ratios: Sequence[float] = DEFAULT_LAYER_RATIOS,
        mode: str = "joint",
    ):
        super().__init__()
        _check(level_ratios, layer_ratios, mode)
        self.level_ratios = tuple(float(r) for r in level_ratios)
        self.layer_ratios = tuple(float(r) for r in layer_ratios)
        self.mode = mode

    @property
    def num_layers(self) -> int:
        return len(self.layer_ratios)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, level_ratios={self.level_ratios}, layer_ratios={self.layer_ratios}"

    def expected_counts(
        self, valid_counts: Union[torch.Tensor, Sequence]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """See module-level ``expected_counts``."""
        return expected_counts(valid_counts, self.level_ratios, self.layer_ratios, self.mode)

    def forward(
        self,
        scores: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_counts: torch.Tensor,
        valid_mask: Optional[torch.Tensor] = None,
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """See ``select_tokens``."""
        return select_tokens(
            scores,
            spatial_shapes,
            level_start_index,
            valid_counts,
            self.level_ratios,
            self.layer_ratios,
            self.mode,
            valid_mask,
        )
