"""Triton kernels for multi-scale deformable attention (forward and backward).

Same function as the pure-PyTorch ``grid_sample`` reference
(:func:`sdconet.modeling.ops.ms_deform_attn_pytorch.ms_deform_attn_pytorch`): bilinear sampling with
``align_corners=False`` semantics (a normalised location ``u`` on a level of width ``W`` maps to the pixel
coordinate ``u * W - 0.5``; pixel centres sit at ``(i + 0.5) / W``) and zero padding (corners outside the
map read 0 and receive no gradient), weighted by the attention weights and summed over levels and points.

Layout. The kernels treat every ``(batch, query, head)`` triple as one "row" ``r = (b * Nq + q) * M + m``;
this is the natural memory order of ``sampling_locations (B, Nq, M, L, P, 2)``, ``attention_weights
(B, Nq, M, L, P)`` and the output ``(B, Nq, M * Dh)``. One program handles ``BLOCK_R`` rows and all ``Dh``
channels, loops over the ``L`` levels (run-time loop) and ``P`` points (unrolled), and gathers the corners as
contiguous ``Dh``-vectors of ``value (B, S, M, Dh)``. Arithmetic is in float32 for float32/bfloat16/float16
inputs (float64 if any input is float64, e.g. for gradcheck).

Backward recomputes the corner values, writes the gradients of the locations and weights directly (each row
is owned by one program) and scatters ``grad_value`` with atomic adds into a float32 (float64) buffer, cast to
the value dtype at the end. Atomic accumulation order varies, so ``grad_value`` is not bitwise deterministic.

Custom ops. The launches are registered as ``torch.ops.sdconet.ms_deform_attn_triton`` and
``torch.ops.sdconet.ms_deform_attn_triton_backward`` (``torch.library.custom_op``, with fake implementations and
the autograd formula registered on the forward op). ``torch.compile`` therefore sees one opaque op per call
(no graph break, no tracing into Triton's launcher) and CUDA graphs (``mode="reduce-overhead"``) capture it
like any other kernel.

Importing this module needs only ``torch`` (the ops are registered even without ``triton``, so graphs that
contain them can be traced anywhere); the kernels run on CUDA tensors, or on CPU tensors under
``TRITON_INTERPRET=1`` (slow; tests only).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Optional, Tuple

import torch

from .ms_deform_attn_pytorch import check_msda_inputs

logger = logging.getLogger(__name__)

try:  # Triton is optional: the pure-PyTorch path is always available.
    import triton
    import triton.language as tl
except ImportError as _err:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    _TRITON_IMPORT_ERROR: Optional[ImportError] = _err
else:
    _TRITON_IMPORT_ERROR = None

__all__ = ["ms_deform_attn_triton", "is_triton_available", "OP_FORWARD", "OP_BACKWARD"]

#: Names of the custom ops (``torch.ops.sdconet.ms_deform_attn_triton`` and its backward).
OP_FORWARD = "sdconet::ms_deform_attn_triton"
OP_BACKWARD = "sdconet::ms_deform_attn_triton_backward"

# Rows (batch*query*head triples) per program and warps per program. Chosen from the sweep in
# tools/bench_msda.py on an H200 (see docs/BENCHMARKS.md, "Multi-scale deformable attention kernel").
DEFAULT_FWD_BLOCK_R = 32
DEFAULT_FWD_NUM_WARPS = 4
DEFAULT_BWD_BLOCK_R = 32
DEFAULT_BWD_NUM_WARPS = 4


_TL_DTYPE = {} if tl is None else {torch.float32: tl.float32, torch.float64: tl.float64}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def is_triton_available(tensor: Optional[torch.Tensor] = None) -> bool:
    """Whether the Triton kernels can run (on ``tensor``'s device, if given).

    Args:
        tensor: optional tensor whose device is checked: CUDA, or any device under ``TRITON_INTERPRET=1``.

    Returns:
        True if Triton imported and the device is usable.
    """
    if triton is None:
        return False
    if tensor is None:
        return _interpreting() or torch.cuda.is_available()
    return tensor.is_cuda or _interpreting()


if triton is not None:

    @triton.jit
    def _tile_mask(row_mask, d, DH: tl.constexpr, DH_PAD: tl.constexpr, BLOCK_R: tl.constexpr):
        """(BLOCK_R, DH_PAD) mask, constant along channels when Dh is a power of two (vectorised loads)."""
        if DH == DH_PAD:
            mask = tl.broadcast_to(row_mask[:, None], (BLOCK_R, DH_PAD))
        else:
            mask = row_mask[:, None] & (d < DH)[None, :]
        return mask

    @triton.jit
    def _pixel_coords(loc_ptr, attn_ptr, rows64, row_mask, lp, H, W, LP: tl.constexpr, ACC: tl.constexpr):
        """Per row, point ``lp`` of the flattened (L, P) axis: (weight, pixel x, pixel y) in ACC precision."""
        x = tl.load(loc_ptr + (rows64 * LP + lp) * 2, mask=row_mask, other=0.0).to(ACC)
        y = tl.load(loc_ptr + (rows64 * LP + lp) * 2 + 1, mask=row_mask, other=0.0).to(ACC)
        a = tl.load(attn_ptr + rows64 * LP + lp, mask=row_mask, other=0.0).to(ACC)
        wf = W.to(ACC)
        hf = H.to(ACC)
        # Same arithmetic as the reference on CUDA (grid = 2*loc - 1, then grid_sample's unnormalisation
        # ((g + 1) * size - 1) / 2, whose multiply-add nvcc contracts to one fma) so that floor() agrees bit
        # for bit on float32 inputs; a different rounding would flip the corner (and the location gradient)
        # of samples lying within an ulp of a pixel boundary.
        gx = 2.0 * x - 1.0
        gy = 2.0 * y - 1.0
        px = tl.fma(gx + 1.0, wf, -1.0) * 0.5
        py = tl.fma(gy + 1.0, hf, -1.0) * 0.5
        # Beyond [-1, size] every corner is outside (value and gradient 0); clamping keeps the int cast safe.
        px = tl.minimum(tl.maximum(px, -2.0), wf + 1.0)
        py = tl.minimum(tl.maximum(py, -2.0), hf + 1.0)
        return a, px, py

    @triton.jit
    def _corners(px, py, H, W, start, tok_stride, vbase, row_mask):
        """Element offsets of the nw/ne/sw/se corners in value and whether each lies inside the map."""
        x0 = tl.floor(px).to(tl.int32)
        y0 = tl.floor(py).to(tl.int32)
        in_x0 = (x0 >= 0) & (x0 < W)
        in_x1 = (x0 >= -1) & (x0 < W - 1)
        in_y0 = (y0 >= 0) & (y0 < H)
        in_y1 = (y0 >= -1) & (y0 < H - 1)
        t_nw = (start + y0 * W + x0).to(tl.int64) * tok_stride + vbase
        t_sw = t_nw + W.to(tl.int64) * tok_stride
        ok_nw = row_mask & in_x0 & in_y0
        ok_ne = row_mask & in_x1 & in_y0
        ok_sw = row_mask & in_x0 & in_y1
        ok_se = row_mask & in_x1 & in_y1
        return t_nw, t_nw + tok_stride, t_sw, t_sw + tok_stride, ok_nw, ok_ne, ok_sw, ok_se

    @triton.jit
    def _gather(value_ptr, offs, d, ok, mask2, ACC: tl.constexpr):
        """(BLOCK_R, DH_PAD) corner values, zero where the corner is outside the map."""
        return tl.load(value_ptr + offs[:, None] + d[None, :], mask=mask2 & ok[:, None], other=0.0).to(ACC)

    @triton.jit
    def _msda_fwd_kernel(
        value_ptr,
        shapes_ptr,
        start_ptr,
        loc_ptr,
        attn_ptr,
        out_ptr,
        num_rows,
        num_heads,
        rows_per_batch,
        num_tokens,
        DH: tl.constexpr,
        DH_PAD: tl.constexpr,
        L: tl.constexpr,
        P: tl.constexpr,
        BLOCK_R: tl.constexpr,
        ACC: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        row_mask = rows < num_rows
        rows64 = rows.to(tl.int64)
        b = rows64 // rows_per_batch
        m = rows64 % num_heads
        d = tl.arange(0, DH_PAD)
        mask2 = _tile_mask(row_mask, d, DH, DH_PAD, BLOCK_R)
        tok_stride = num_heads * DH
        # Offset of token 0 of head m in batch b; token s adds s * M * Dh.
        vbase = (b * num_tokens * num_heads + m) * DH
        acc = tl.zeros((BLOCK_R, DH_PAD), dtype=ACC)
        # A run-time loop over levels (not unrolled) keeps register pressure low: unrolling all L*P points
        # let the compiler hoist every gather and spill.
        for lvl in tl.range(0, L):
            H = tl.load(shapes_ptr + 2 * lvl)
            W = tl.load(shapes_ptr + 2 * lvl + 1)
            start = tl.load(start_ptr + lvl)
            for pt in tl.static_range(P):
                a, px, py = _pixel_coords(loc_ptr, attn_ptr, rows64, row_mask, lvl * P + pt, H, W, L * P, ACC)
                t_nw, t_ne, t_sw, t_se, ok_nw, ok_ne, ok_sw, ok_se = _corners(
                    px, py, H, W, start, tok_stride, vbase, row_mask
                )
                # Bilinear weights written like torch's grid_sampler: (x1 - x) etc.
                x0f = tl.floor(px)
                y0f = tl.floor(py)
                ax0 = (x0f + 1.0 - px) * a
                ax1 = (px - x0f) * a
                dy1 = y0f + 1.0 - py
                dy0 = py - y0f
                acc += (ax0 * dy1)[:, None] * _gather(value_ptr, t_nw, d, ok_nw, mask2, ACC)
                acc += (ax1 * dy1)[:, None] * _gather(value_ptr, t_ne, d, ok_ne, mask2, ACC)
                acc += (ax0 * dy0)[:, None] * _gather(value_ptr, t_sw, d, ok_sw, mask2, ACC)
                acc += (ax1 * dy0)[:, None] * _gather(value_ptr, t_se, d, ok_se, mask2, ACC)
        tl.store(out_ptr + rows64[:, None] * DH + d[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask2)

    @triton.jit
    def _msda_bwd_kernel(
        value_ptr,
        shapes_ptr,
        start_ptr,
        loc_ptr,
        attn_ptr,
        grad_out_ptr,
        grad_value_ptr,
        grad_loc_ptr,
        grad_attn_ptr,
        num_rows,
        num_heads,
        rows_per_batch,
        num_tokens,
        DH: tl.constexpr,
        DH_PAD: tl.constexpr,
        L: tl.constexpr,
        P: tl.constexpr,
        BLOCK_R: tl.constexpr,
        NEED_GRAD_VALUE: tl.constexpr,
        NEED_GRAD_SAMPLING: tl.constexpr,
        ACC: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        row_mask = rows < num_rows
        rows64 = rows.to(tl.int64)
        b = rows64 // rows_per_batch
        m = rows64 % num_heads
        d = tl.arange(0, DH_PAD)
        mask2 = _tile_mask(row_mask, d, DH, DH_PAD, BLOCK_R)
        tok_stride = num_heads * DH
        vbase = (b * num_tokens * num_heads + m) * DH
        go = tl.load(grad_out_ptr + rows64[:, None] * DH + d[None, :], mask=mask2, other=0.0).to(ACC)
        for lvl in tl.range(0, L):
            H = tl.load(shapes_ptr + 2 * lvl)
            W = tl.load(shapes_ptr + 2 * lvl + 1)
            start = tl.load(start_ptr + lvl)
            for pt in tl.static_range(P):
                lp = lvl * P + pt
                a, px, py = _pixel_coords(loc_ptr, attn_ptr, rows64, row_mask, lp, H, W, L * P, ACC)
                t_nw, t_ne, t_sw, t_se, ok_nw, ok_ne, ok_sw, ok_se = _corners(
                    px, py, H, W, start, tok_stride, vbase, row_mask
                )
                x0f = tl.floor(px)
                y0f = tl.floor(py)
                dx1 = x0f + 1.0 - px
                dx0 = px - x0f
                dy1 = y0f + 1.0 - py
                dy0 = py - y0f
                if NEED_GRAD_SAMPLING:
                    v_nw = _gather(value_ptr, t_nw, d, ok_nw, mask2, ACC)
                    v_ne = _gather(value_ptr, t_ne, d, ok_ne, mask2, ACC)
                    v_sw = _gather(value_ptr, t_sw, d, ok_sw, mask2, ACC)
                    v_se = _gather(value_ptr, t_se, d, ok_se, mask2, ACC)
                    # d(loss)/d(weight) = <grad_out, bilinear sample>.
                    sampled = (dx1 * dy1)[:, None] * v_nw + (dx0 * dy1)[:, None] * v_ne
                    sampled += (dx1 * dy0)[:, None] * v_sw + (dx0 * dy0)[:, None] * v_se
                    g_attn = tl.sum(go * sampled, axis=1)
                    # d(sample)/d(px), d(sample)/d(py); px = loc_x * W - 0.5, so d(px)/d(loc_x) = W.
                    ddx = dy1[:, None] * (v_ne - v_nw) + dy0[:, None] * (v_se - v_sw)
                    ddy = dx1[:, None] * (v_sw - v_nw) + dx0[:, None] * (v_se - v_ne)
                    g_x = a * W.to(ACC) * tl.sum(go * ddx, axis=1)
                    g_y = a * H.to(ACC) * tl.sum(go * ddy, axis=1)
                    gl_ty = grad_loc_ptr.dtype.element_ty
                    tl.store(
                        grad_attn_ptr + rows64 * (L * P) + lp,
                        g_attn.to(grad_attn_ptr.dtype.element_ty),
                        row_mask,
                    )
                    tl.store(grad_loc_ptr + (rows64 * (L * P) + lp) * 2, g_x.to(gl_ty), mask=row_mask)
                    tl.store(grad_loc_ptr + (rows64 * (L * P) + lp) * 2 + 1, g_y.to(gl_ty), mask=row_mask)
                if NEED_GRAD_VALUE:
                    # Scatter a * w_corner * grad_out into each in-bounds corner.
                    gax0 = go * (a * dx1)[:, None]
                    gax1 = go * (a * dx0)[:, None]
                    gv_ptr = grad_value_ptr + d[None, :]
                    tl.atomic_add(
                        gv_ptr + t_nw[:, None],
                        gax0 * dy1[:, None],
                        mask=mask2 & ok_nw[:, None],
                        sem="relaxed",
                    )
                    tl.atomic_add(
                        gv_ptr + t_ne[:, None],
                        gax1 * dy1[:, None],
                        mask=mask2 & ok_ne[:, None],
                        sem="relaxed",
                    )
                    tl.atomic_add(
                        gv_ptr + t_sw[:, None],
                        gax0 * dy0[:, None],
                        mask=mask2 & ok_sw[:, None],
                        sem="relaxed",
                    )
                    tl.atomic_add(
                        gv_ptr + t_se[:, None],
                        gax1 * dy0[:, None],
                        mask=mask2 & ok_se[:, None],
                        sem="relaxed",
                    )


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> Tuple[int, int, int, int, int, int, int]:
    """Validates shapes; returns (B, S, M, Dh, Nq, L, P)."""
    where = "ms_deform_attn_triton"
    if value.dim() != 4:
        raise ValueError(f"{where}: value must be (B, S, M, Dh), got shape {tuple(value.shape)}")
    B, S, M, Dh = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"{where}: sampling_locations must be (B, Nq, M, L, P, 2), got {tuple(sampling_locations.shape)}"
        )
    _, Nq, _, L, P, _ = sampling_locations.shape
    if sampling_locations.shape[0] != B or sampling_locations.shape[2] != M:
        raise ValueError(
            f"{where}: sampling_locations {tuple(sampling_locations.shape)} does not match value "
            f"{tuple(value.shape)} in batch/heads"
        )
    if tuple(attention_weights.shape) != (B, Nq, M, L, P):
        raise ValueError(
            f"{where}: attention_weights must be {(B, Nq, M, L, P)}, got {tuple(attention_weights.shape)}"
        )
    if tuple(spatial_shapes.shape) != (L, 2):
        raise ValueError(f"{where}: spatial_shapes must be ({L}, 2), got {tuple(spatial_shapes.shape)}")
    if tuple(level_start_index.shape) != (L,):
        raise ValueError(f"{where}: level_start_index must be ({L},), got {tuple(level_start_index.shape)}")
    if spatial_shapes.device.type == "cpu":  # checked only where it costs no device synchronisation
        total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
        if total != S:
            raise ValueError(
                f"{where}: value has S={S} tokens but spatial_shapes {spatial_shapes.tolist()} sum to {total}"
            )
    for name, t in (
        ("value", value),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if not t.is_floating_point():
            raise TypeError(f"{where}: {name} must be floating point, got {t.dtype}")
        if t.device != value.device:
            raise ValueError(f"{where}: {name} is on {t.device}, value on {value.device}")
    if not is_triton_available(value):
        reason = "triton is not installed" if triton is None else f"tensors are on {value.device}, not CUDA"
        raise RuntimeError(f"{where}: cannot run ({reason}); use the pure-PyTorch path")
    return B, S, M, Dh, Nq, L, P


def _accumulation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _launch_forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    block_r: int,
    num_warps: int,
) -> torch.Tensor:
    B, S, M, Dh, Nq, L, P = _check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    value = value.contiguous()
    sampling_locations = sampling_locations.contiguous()
    attention_weights = attention_weights.contiguous()
    shapes_i32 = spatial_shapes.to(device=value.device, dtype=torch.int32).contiguous()
    start_i32 = level_start_index.to(device=value.device, dtype=torch.int32).contiguous()
    out = torch.empty((B, Nq, M * Dh), device=value.device, dtype=value.dtype)
    acc_dtype = _accumulation_dtype(value, sampling_locations, attention_weights)
    num_rows = B * Nq * M
    if num_rows > 0:
        grid = (triton.cdiv(num_rows, block_r),)
        _msda_fwd_kernel[grid](
            value,
            shapes_i32,
            start_i32,
            sampling_locations,
            attention_weights,
            out,
            num_rows,
            M,
            Nq * M,
            S,
            DH=Dh,
            DH_PAD=triton.next_power_of_2(Dh),
            L=L,
            P=P,
            BLOCK_R=block_r,
            ACC=_TL_DTYPE[acc_dtype],
            num_warps=num_warps,
        )
    return out


def _launch_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    need_value: bool,
    need_sampling: bool,
    block_r: int,
    num_warps: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, S, M, Dh, Nq, L, P = _check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    value = value.contiguous()
    sampling_locations = sampling_locations.contiguous()
    attention_weights = attention_weights.contiguous()
    shapes_i32 = spatial_shapes.to(device=value.device, dtype=torch.int32).contiguous()
    start_i32 = level_start_index.to(device=value.device, dtype=torch.int32).contiguous()
    acc_dtype = _accumulation_dtype(value, sampling_locations, attention_weights)
    grad_output = grad_output.contiguous()
    # float32 (float64) accumulation buffer for the atomic scatter; a dummy when not needed.
    gv32 = torch.zeros(value.shape if need_value else (1,), device=value.device, dtype=acc_dtype)
    if need_sampling:
        grad_loc = torch.empty_like(sampling_locations)
        grad_attn = torch.empty_like(attention_weights)
        gl_arg, ga_arg = grad_loc, grad_attn
    else:
        grad_loc = sampling_locations.new_empty(0)
        grad_attn = attention_weights.new_empty(0)
        gl_arg = ga_arg = gv32
    num_rows = B * Nq * M
    if num_rows > 0:
        grid = (triton.cdiv(num_rows, block_r),)
        _msda_bwd_kernel[grid](
            value,
            shapes_i32,
            start_i32,
            sampling_locations,
            attention_weights,
            grad_output,
            gv32,
            gl_arg,
            ga_arg,
            num_rows,
            M,
            Nq * M,
            S,
            DH=Dh,
            DH_PAD=triton.next_power_of_2(Dh),
            L=L,
            P=P,
            BLOCK_R=block_r,
            NEED_GRAD_VALUE=need_value,
            NEED_GRAD_SAMPLING=need_sampling,
            ACC=_TL_DTYPE[acc_dtype],
            num_warps=num_warps,
        )
    elif need_sampling:
        grad_loc.zero_()
        grad_attn.zero_()
    if need_value:
        grad_value = gv32.to(value.dtype) if value.dtype != gv32.dtype else gv32
    else:
        grad_value = value.new_empty(0)
    return grad_value, grad_loc, grad_attn


# ---------------------------------------------------------------------------------------------------------------
# The kernels as PyTorch custom ops: ``torch.compile`` (and CUDA graphs under mode="reduce-overhead") see each
# launch as one opaque op with a fake (shape-only) implementation, instead of tracing into Triton's launcher.


@torch.library.custom_op(OP_FORWARD, mutates_args=())
def _msda_forward_op(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    block_r: int,
    num_warps: int,
) -> torch.Tensor:
    """(B, S, M, Dh) values -> (B, Nq, M * Dh); see :func:`ms_deform_attn_triton`."""
    return _launch_forward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, block_r, num_warps
    )


@_msda_forward_op.register_fake
def _msda_forward_fake(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, block_r, num_warps
):
    check_msda_inputs(
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        "ms_deform_attn_triton",
    )
    bsz, _, heads, head_dim = value.shape
    return value.new_empty((bsz, sampling_locations.shape[1], heads * head_dim))


@torch.library.custom_op(OP_BACKWARD, mutates_args=())
def _msda_backward_op(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    need_value: bool,
    need_sampling: bool,
    block_r: int,
    num_warps: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of value, sampling locations and attention weights (empty tensors where not needed)."""
    return _launch_backward(
        grad_output,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        need_value,
        need_sampling,
        block_r,
        num_warps,
    )


@_msda_backward_op.register_fake
def _msda_backward_fake(
    grad_output,
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    need_value,
    need_sampling,
    block_r,
    num_warps,
):
    grad_value = value.new_empty(value.shape if need_value else (0,))
    grad_loc = sampling_locations.new_empty(sampling_locations.shape if need_sampling else (0,))
    grad_attn = attention_weights.new_empty(attention_weights.shape if need_sampling else (0,))
    return grad_value, grad_loc, grad_attn


def _setup_context(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, _, _ = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    ctx.bwd_config = _BWD_CONFIG.value or (DEFAULT_BWD_BLOCK_R, DEFAULT_BWD_NUM_WARPS)


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    need_value = ctx.needs_input_grad[0]
    need_sampling = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
    if not (need_value or need_sampling):
        return None, None, None, None, None, None, None
    block_r, num_warps = ctx.bwd_config
    grad_value, grad_loc, grad_attn = _msda_backward_op(
        grad_output,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        need_value,
        need_sampling,
        block_r,
        num_warps,
    )
    return (
        grad_value if need_value else None,
        None,
        None,
        grad_loc if ctx.needs_input_grad[3] else None,
        grad_attn if ctx.needs_input_grad[4] else None,
        None,
        None,
    )


_msda_forward_op.register_autograd(_backward, setup_context=_setup_context)


class _ThreadConfig(threading.local):
    value: Optional[Tuple[int, int]] = None


#: Backward launch configuration for benchmarking (``bwd_config`` of :func:`ms_deform_attn_triton`).
_BWD_CONFIG = _ThreadConfig()


def ms_deform_attn_triton(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    fwd_config: Optional[Tuple[int, int]] = None,
    bwd_config: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """Multi-scale deformable attention core on Triton (same function as the ``grid_sample`` reference).

    Args:
        value: (B, S, M, Dh) float32/bfloat16/float16/float64 per-head values, tokens flattened level by level
            (finest first, row-major); padded tokens are expected to be zero already.
        spatial_shapes: (L, 2) integer (H_l, W_l) per level.
        level_start_index: (L,) integer exclusive cumsum of H_l * W_l.
        sampling_locations: (B, Nq, M, L, P, 2) normalised (x, y) in the padded-canvas frame of each level;
            ``u`` maps to pixel ``u * size - 0.5``; samples outside the map read zeros.
        attention_weights: (B, Nq, M, L, P) weights (softmax over L*P done by the caller).
        fwd_config: optional (rows per program, warps) for the forward kernel (benchmarking).
        bwd_config: optional (rows per program, warps) for the backward kernel (benchmarking).

    Returns:
        (B, Nq, M * Dh) tensor in ``value``'s dtype (accumulated in float32, or float64 if any input is
        float64). Differentiable with respect to ``value``, ``sampling_locations`` and ``attention_weights``
        (each gradient in its input's dtype). Level shapes must match S (checked only when ``spatial_shapes``
        is on the CPU, to avoid a device synchronisation).

    Raises:
        RuntimeError: if Triton is missing or the tensors are not on CUDA (and not interpreting).
        ValueError: on inconsistent shapes.
    """
    block_r, num_warps = (
        tuple(fwd_config) if fwd_config is not None else (DEFAULT_FWD_BLOCK_R, DEFAULT_FWD_NUM_WARPS)
    )
    if bwd_config is None:
        return _msda_forward_op(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            block_r,
            num_warps,
        )
    previous = _BWD_CONFIG.value
    _BWD_CONFIG.value = tuple(bwd_config)
    try:
        return _msda_forward_op(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            block_r,
            num_warps,
        )
    finally:
        _BWD_CONFIG.value = previous
