#!/usr/bin/env python
"""Parity check and micro-benchmark of the Triton multi-scale deformable attention kernel.

Compares ``sdconet.modeling.ops.ms_deform_attn_triton.ms_deform_attn_triton`` with the pure-PyTorch
``grid_sample`` reference at SDCoNet's shapes (D=256: M=8 heads x Dh=32, L=4 levels, P=4 points):

* ``--parity``: forward and the gradients of value, sampling_locations and attention_weights on random inputs
  (locations partly outside [0, 1] to exercise zero padding; odd level sizes), float32 against the float32
  reference (relative error <= 1e-5) and bfloat16 against a float64 reference on the same rounded inputs
  (<= 1e-2); each error is ||kernel - ref|| / ||ref||.
* ``--bench``: median time (device events, ``triton.testing.do_bench``, L2 flushed between runs) of
  forward+backward at training shapes and forward at inference shapes, kernel vs ``grid_sample``.
* ``--sweep``: rows-per-program / warps of both kernels at the main training shape.

Usage (from the repository root, on a CUDA machine)::

    PYTHONPATH=projects/SDCoNet python tools/bench_msda.py --parity --bench --sweep --out out/msda.json

Prints tables and writes all numbers to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover

    def tqdm(x, **_):
        return x


from sdconet.modeling.ops import ms_deform_attn_triton as msda_triton
from sdconet.modeling.ops.ms_deform_attn_pytorch import ms_deform_attn_pytorch as reference_msda

REFERENCE_SOURCE = "sdconet.modeling.ops.ms_deform_attn_pytorch"

HEADS, HEAD_DIM, LEVELS, POINTS = 8, 32, 4, 4  # SDCoNet: d_model 256 = 8 x 32, 4 levels, 4 points
FP32_TOL = 1e-5
BF16_TOL = 1e-2
LEVEL_SHAPES = {  # LR input side -> (H_l, W_l) for strides 8, 16, 32, 64
    256: [(32, 32), (16, 16), (8, 8), (4, 4)],
    512: [(64, 64), (32, 32), (16, 16), (8, 8)],
}
ENCODER_KEEP = (1.0, 0.6, 0.2)  # all tokens, and kept fractions of pruned encoder layers
DECODER_TRAIN_QUERIES = 500  # 300 matching queries + up to 200 denoising queries
DECODER_INFER_QUERIES = 300


def level_meta(shapes: Sequence[Tuple[int, int]], device) -> Tuple[torch.Tensor, torch.Tensor, int]:
    ss = torch.tensor(shapes, dtype=torch.long, device=device)
    areas = ss[:, 0] * ss[:, 1]
    lsi = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    return ss, lsi, int(areas.sum())


def make_inputs(shapes, batch, num_queries, heads, head_dim, points, dtype, device, lo=0.0, hi=1.0, seed=0):
    """Random value (B,S,M,Dh), locations (B,Nq,M,L,P,2) in [lo,hi], softmaxed weights, grad (B,Nq,M*Dh)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ss, lsi, S = level_meta(shapes, device)
    L = len(shapes)
    value = torch.randn(batch, S, heads, head_dim, generator=gen)
    loc = lo + (hi - lo) * torch.rand(batch, num_queries, heads, L, points, 2, generator=gen)
    attn = torch.randn(batch, num_queries, heads, L * points, generator=gen).softmax(-1)
    attn = attn.view(batch, num_queries, heads, L, points)
    grad = torch.randn(batch, num_queries, heads * head_dim, generator=gen)
    cast = [t.to(device=device, dtype=dtype) for t in (value, loc, attn, grad)]
    return ss, lsi, cast


def run_fwd_bwd(fn: Callable, ss, lsi, value, loc, attn, grad) -> List[torch.Tensor]:
    value, loc, attn = (t.detach().clone().requires_grad_() for t in (value, loc, attn))
    out = fn(value, ss, lsi, loc, attn)
    out.backward(grad)
    return [out.detach(), value.grad, loc.grad, attn.grad]


def poison_like(tensors: Sequence[torch.Tensor]) -> None:
    """Fill freed allocator blocks of these sizes with NaN so unwritten kernel outputs cannot pass."""
    junk = [torch.full_like(t, float("nan")) for t in tensors]
    del junk


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    if not torch.isfinite(x).all():
        return float("inf")
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


PARITY_CASES = [
    # name, level shapes, batch, queries, heads, head_dim, points, location range
    ("enc256_full", LEVEL_SHAPES[256], 2, 1360, HEADS, HEAD_DIM, POINTS, (0.0, 1.0)),
    ("enc256_keep0.3_oob", LEVEL_SHAPES[256], 2, 408, HEADS, HEAD_DIM, POINTS, (-0.05, 1.05)),
    ("dec512_500q_oob", LEVEL_SHAPES[512], 2, 500, HEADS, HEAD_DIM, POINTS, (-0.1, 1.1)),
    ("enc512_full_b8", LEVEL_SHAPES[512], 8, 5440, HEADS, HEAD_DIM, POINTS, (0.0, 1.0)),
    ("odd_levels_oob", [(13, 17), (7, 9), (4, 5), (2, 3)], 3, 101, HEADS, HEAD_DIM, POINTS, (-0.1, 1.1)),
    ("odd_dh24_m3_l3_p3", [(11, 10), (5, 6), (3, 3)], 2, 77, 3, 24, 3, (-0.2, 1.2)),
]


def parity(device) -> List[Dict]:
    rows = []
    names = ["output", "grad_value", "grad_loc", "grad_attn"]
    for name, shapes, B, Nq, M, Dh, P, (lo, hi) in tqdm(PARITY_CASES, desc="parity"):
        for seed, dtype in enumerate((torch.float32, torch.bfloat16)):
            ss, lsi, (v, loc, attn, grad) = make_inputs(shapes, B, Nq, M, Dh, P, dtype, device, lo, hi, seed)
            ref_same = run_fwd_bwd(reference_msda, ss, lsi, v, loc, attn, grad)
            ref64 = run_fwd_bwd(reference_msda, ss, lsi, *(t.double() for t in (v, loc, attn, grad)))
            poison_like(ref_same)
            ker = run_fwd_bwd(msda_triton.ms_deform_attn_triton, ss, lsi, v, loc, attn, grad)
            ker2 = run_fwd_bwd(msda_triton.ms_deform_attn_triton, ss, lsi, v, loc, attn, grad)
            for i, qname in enumerate(names):
                e_same = rel_err(ker[i], ref_same[i])
                e64 = rel_err(ker[i], ref64[i])
                e_ref64 = rel_err(ref_same[i], ref64[i])
                if dtype == torch.float32:
                    tol, crit = FP32_TOL, e_same
                else:
                    tol, crit = BF16_TOL, e64
                rows.append(
                    {
                        "case": name,
                        "dtype": str(dtype).replace("torch.", ""),
                        "quantity": qname,
                        "kernel_vs_ref_same_dtype": e_same,
                        "kernel_vs_ref_fp64": e64,
                        "ref_same_dtype_vs_fp64": e_ref64,
                        "rerun_max_abs_diff": (ker[i].double() - ker2[i].double()).abs().max().item(),
                        "dtype_ok": ker[i].dtype == ref_same[i].dtype,
                        "criterion": "vs fp32 ref" if dtype == torch.float32 else "vs fp64 ref",
                        "tol": tol,
                        "pass": bool(crit <= tol and ker[i].dtype == ref_same[i].dtype),
                    }
                )
    return rows


def bench_one(fn, ss, lsi, v, loc, attn, grad, backward: bool, reps_ms: int) -> float:
    from triton.testing import do_bench

    if backward:
        v, loc, attn = (t.detach().clone().requires_grad_() for t in (v, loc, attn))

        def step():
            fn(v, ss, lsi, loc, attn).backward(grad)

        return do_bench(step, warmup=25, rep=reps_ms, grad_to_none=[v, loc, attn], return_mode="median")
    with torch.no_grad():
        return do_bench(lambda: fn(v, ss, lsi, loc, attn), warmup=25, rep=reps_ms, return_mode="median")


def bench_cases() -> List[Tuple[str, int, int, int, bool]]:
    """(kind, LR side, batch, queries, backward) for training (fwd+bwd) and inference (fwd)."""
    cases = []
    for side in (256, 512):
        S = sum(h * w for h, w in LEVEL_SHAPES[side])
        for B in (2, 8):
            for keep in ENCODER_KEEP:
                cases.append((f"train_enc_keep{keep}", side, B, max(1, round(keep * S)), True))
            cases.append(("train_dec", side, B, DECODER_TRAIN_QUERIES, True))
        for B in (1, 8):
            cases.append(("infer_enc_keep0.6", side, B, round(0.6 * S), False))
            cases.append(("infer_dec", side, B, DECODER_INFER_QUERIES, False))
    return cases


def bench(device, reps_ms: int) -> List[Dict]:
    rows = []
    cases = [(c, dt) for c in bench_cases() for dt in (torch.float32, torch.bfloat16)]
    for (kind, side, B, Nq, backward), dtype in tqdm(cases, desc="bench"):
        ss, lsi, (v, loc, attn, grad) = make_inputs(
            LEVEL_SHAPES[side], B, Nq, HEADS, HEAD_DIM, POINTS, dtype, device
        )
        t_ref = bench_one(reference_msda, ss, lsi, v, loc, attn, grad, backward, reps_ms)
        t_ker = bench_one(msda_triton.ms_deform_attn_triton, ss, lsi, v, loc, attn, grad, backward, reps_ms)
        rows.append(
            {
                "kind": kind,
                "lr_side": side,
                "S": v.shape[1],
                "batch": B,
                "queries": Nq,
                "dtype": str(dtype).replace("torch.", ""),
                "mode": "fwd+bwd" if backward else "fwd",
                "grid_sample_ms": t_ref,
                "triton_ms": t_ker,
                "speedup": t_ref / t_ker,
            }
        )
    return rows


def sweep(device, reps_ms: int) -> List[Dict]:
    rows = []
    side, B = 512, 2
    S = sum(h * w for h, w in LEVEL_SHAPES[side])
    configs = [(16, 2), (32, 2), (32, 4), (64, 4), (64, 8), (128, 8)]
    jobs = [(dt, c) for dt in (torch.float32, torch.bfloat16) for c in configs]
    for dtype, (block_r, warps) in tqdm(jobs, desc="sweep"):
        ss, lsi, (v, loc, attn, grad) = make_inputs(
            LEVEL_SHAPES[side], B, S, HEADS, HEAD_DIM, POINTS, dtype, device
        )

        def fwd(v_, ss_, lsi_, loc_, attn_, cfg=(block_r, warps)):
            return msda_triton.ms_deform_attn_triton(v_, ss_, lsi_, loc_, attn_, fwd_config=cfg)

        def fwd_bwd(v_, ss_, lsi_, loc_, attn_, cfg=(block_r, warps)):
            return msda_triton.ms_deform_attn_triton(
                v_, ss_, lsi_, loc_, attn_, fwd_config=cfg, bwd_config=cfg
            )

        t_f = bench_one(fwd, ss, lsi, v, loc, attn, grad, False, reps_ms)
        t_fb = bench_one(fwd_bwd, ss, lsi, v, loc, attn, grad, True, reps_ms)
        rows.append(
            {
                "dtype": str(dtype).replace("torch.", ""),
                "block_r": block_r,
                "num_warps": warps,
                "fwd_ms": t_f,
                "fwd_bwd_ms": t_fb,
                "bwd_ms_est": t_fb - t_f,
                "shape": f"lr{side} B{B} Nq{S}",
            }
        )
    return rows


def print_table(rows: List[Dict], cols: Sequence[str]) -> None:
    if not rows:
        return
    fmt = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.rjust(fmt[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r[c]).rjust(fmt[c]) for c in cols))


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e-2 else f"{x:.4f}"
    return str(x)


def write_json_atomic(path: str, payload: Dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parity", action="store_true", help="forward/gradient parity against the reference")
    ap.add_argument("--bench", action="store_true", help="kernel vs grid_sample timings")
    ap.add_argument("--sweep", action="store_true", help="block-size/warps sweep at the main training shape")
    ap.add_argument(
        "--reps-ms", type=int, default=100, help="do_bench repetition budget per measurement (ms)"
    )
    ap.add_argument("--out", default="output/bench_msda.json", help="JSON file for all numbers")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_msda: no CUDA device; nothing to do", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    import triton

    payload = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "reference": REFERENCE_SOURCE,
        "defaults": {
            "fwd": [msda_triton.DEFAULT_FWD_BLOCK_R, msda_triton.DEFAULT_FWD_NUM_WARPS],
            "bwd": [msda_triton.DEFAULT_BWD_BLOCK_R, msda_triton.DEFAULT_BWD_NUM_WARPS],
        },
    }
    print({k: v for k, v in payload.items()})
    failed = False
    t0 = time.time()
    if args.parity:
        rows = parity(device)
        payload["parity"] = rows
        write_json_atomic(args.out, payload)
        failed = not all(r["pass"] for r in rows)
        print(f"\n== parity ({time.time() - t0:.0f}s) ==")
        print_table(
            rows,
            [
                "case",
                "dtype",
                "quantity",
                "kernel_vs_ref_same_dtype",
                "kernel_vs_ref_fp64",
                "ref_same_dtype_vs_fp64",
                "rerun_max_abs_diff",
                "pass",
            ],
        )
        print("PARITY", "FAILED" if failed else "OK")
    if args.bench:
        rows = bench(device, args.reps_ms)
        payload["bench"] = rows
        write_json_atomic(args.out, payload)
        print(f"\n== bench ({time.time() - t0:.0f}s) ==")
        print_table(
            rows,
            [
                "kind",
                "lr_side",
                "batch",
                "queries",
                "dtype",
                "mode",
                "grid_sample_ms",
                "triton_ms",
                "speedup",
            ],
        )
    if args.sweep:
        rows = sweep(device, args.reps_ms)
        payload["sweep"] = rows
        write_json_atomic(args.out, payload)
        print(f"\n== sweep ({time.time() - t0:.0f}s) ==")
        print_table(rows, ["dtype", "block_r", "num_warps", "fwd_ms", "fwd_bwd_ms", "bwd_ms_est"])
    write_json_atomic(args.out, payload)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
