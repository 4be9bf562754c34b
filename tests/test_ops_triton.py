"""Triton multi-scale deformable attention kernel: parity with the grid_sample reference.

On a CPU-only machine the kernels are exercised through Triton's interpreter (``TRITON_INTERPRET=1``) in a
subprocess on small shapes; the CUDA tests run the compiled kernels at SDCoNet-like shapes and are skipped
without a GPU. Running this file as a script (``python tests/test_ops_triton.py``) performs the interpreter
check on CPU and exits non-zero on a mismatch.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdconet.modeling.ops import ms_deform_attn_triton as msda_triton
from sdconet.modeling.ops.ms_deform_attn_pytorch import ms_deform_attn_pytorch

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()
FP32_TOL = 1e-5
BF16_TOL = 1e-2
NAMES = ("output", "grad_value", "grad_loc", "grad_attn")


def _inputs(shapes, batch, nq, heads, head_dim, points, dtype, device, lo=-0.1, hi=1.1, seed=0):
    """Random (not zero) inputs; locations partly outside [0, 1] to exercise zero padding."""
    gen = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.long)
    areas = ss[:, 0] * ss[:, 1]
    lsi = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    levels, total = len(shapes), int(areas.sum())
    value = torch.randn(batch, total, heads, head_dim, generator=gen)
    loc = lo + (hi - lo) * torch.rand(batch, nq, heads, levels, points, 2, generator=gen)
    attn = torch.rand(batch, nq, heads, levels, points, generator=gen)
    grad = torch.randn(batch, nq, heads * head_dim, generator=gen)
    tensors = [t.to(device=device, dtype=dtype) for t in (value, loc, attn, grad)]
    return ss.to(device), lsi.to(device), tensors


def _fwd_bwd(fn, ss, lsi, value, loc, attn, grad):
    value, loc, attn = (t.detach().clone().requires_grad_() for t in (value, loc, attn))
    out = fn(value, ss, lsi, loc, attn)
    out.backward(grad)
    return [out.detach(), value.grad, loc.grad, attn.grad]


def _rel(x, ref):
    x, ref = x.double(), ref.double()
    assert torch.isfinite(x).all()
    return ((x - ref).norm() / ref.norm()).item()


def _check_case(shapes, batch, nq, heads, head_dim, points, dtype, device, seed=0):
    """Returns {quantity: error}: float32 against the float32 reference, else against float64."""
    ss, lsi, (v, loc, attn, grad) = _inputs(
        shapes, batch, nq, heads, head_dim, points, dtype, device, seed=seed
    )
    ker = _fwd_bwd(msda_triton.ms_deform_attn_triton, ss, lsi, v, loc, attn, grad)
    if dtype == torch.float32:
        ref = _fwd_bwd(ms_deform_attn_pytorch, ss, lsi, v, loc, attn, grad)
    else:
        ref = _fwd_bwd(ms_deform_attn_pytorch, ss, lsi, *(t.double() for t in (v, loc, attn, grad)))
    assert [k.dtype for k in ker] == [v.dtype, v.dtype, loc.dtype, attn.dtype]
    return {name: _rel(k, r) for name, k, r in zip(NAMES, ker, ref)}


# Small shapes for the interpreter: odd, non-square levels; a non-power-of-two head dim.
INTERPRET_CASES = [
    ([(5, 7), (3, 4), (2, 2), (1, 3)], 2, 11, 3, 8, 2, torch.float32),
    ([(6, 5), (3, 3), (1, 1)], 1, 19, 2, 12, 3, torch.float32),
    ([(5, 7), (3, 4)], 2, 9, 2, 8, 2, torch.bfloat16),
]


def _interpreter_main() -> int:
    """Runs the interpreter parity check on CPU; prints errors, returns 0 if all are within tolerance."""
    failed = False
    for seed, (shapes, batch, nq, heads, head_dim, points, dtype) in enumerate(INTERPRET_CASES):
        errs = _check_case(shapes, batch, nq, heads, head_dim, points, dtype, "cpu", seed=seed)
        tol = FP32_TOL if dtype == torch.float32 else BF16_TOL
        ok = all(e <= tol for e in errs.values())
        failed |= not ok
        print(shapes, dtype, {k: f"{e:.2e}" for k, e in errs.items()}, "OK" if ok else "FAIL")
    print("INTERPRETER PARITY", "FAILED" if failed else "OK")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------- CPU
def test_import_and_availability_without_gpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cpu = torch.zeros(1)
    assert msda_triton.is_triton_available(cpu) is False
    assert isinstance(msda_triton.is_triton_available(), bool)
    ss, lsi, (v, loc, attn, _) = _inputs([(3, 2)], 1, 4, 2, 4, 1, torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="pure-PyTorch"):
        msda_triton.ms_deform_attn_triton(v, ss, lsi, loc, attn)


def test_bad_shapes_name_the_argument():
    ss, lsi, (v, loc, attn, _) = _inputs([(3, 2), (2, 2)], 1, 4, 2, 4, 1, torch.float32, "cpu")
    with pytest.raises(ValueError, match="attention_weights"):
        msda_triton.ms_deform_attn_triton(v, ss, lsi, loc, attn[..., :1, :])
    with pytest.raises(ValueError, match="sampling_locations"):
        msda_triton.ms_deform_attn_triton(v, ss, lsi, loc[:, :, :1], attn)
    with pytest.raises(ValueError, match="spatial_shapes"):
        msda_triton.ms_deform_attn_triton(v, ss[:, :1], lsi, loc, attn)
    with pytest.raises(ValueError, match="S=10"):
        msda_triton.ms_deform_attn_triton(v, ss + 1, lsi, loc, attn)


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_interpreter_parity_subprocess():
    """Kernel logic (forward + all gradients) vs the reference on CPU via TRITON_INTERPRET=1."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(repo / "projects" / "SDCoNet"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INTERPRETER PARITY OK" in proc.stdout


# ---------------------------------------------------------------------------------------------- CUDA
SDCONET_256 = [(32, 32), (16, 16), (8, 8), (4, 4)]
CUDA_CASES = [
    pytest.param(SDCONET_256, 2, 1360, 8, 32, 4, id="enc256-all-tokens"),
    pytest.param(SDCONET_256, 2, 408, 8, 32, 4, id="enc256-pruned"),
    pytest.param([(64, 64), (32, 32), (16, 16), (8, 8)], 2, 500, 8, 32, 4, id="dec512"),
    pytest.param([(13, 17), (7, 9), (4, 5), (2, 3)], 3, 101, 8, 32, 4, id="odd-levels"),
    pytest.param([(11, 10), (5, 6), (3, 3)], 2, 77, 3, 24, 3, id="odd-head-dim"),
]


@pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs CUDA and triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shapes,batch,nq,heads,head_dim,points", CUDA_CASES)
def test_cuda_parity(shapes, batch, nq, heads, head_dim, points, dtype):
    errs = _check_case(shapes, batch, nq, heads, head_dim, points, dtype, "cuda")
    tol = FP32_TOL if dtype == torch.float32 else BF16_TOL
    assert all(e <= tol for e in errs.values()), errs


@pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs CUDA and triton")
def test_cuda_partial_grads_float64_and_empty():
    ss, lsi, (v, loc, attn, grad) = _inputs([(7, 5), (3, 3)], 2, 33, 4, 16, 2, torch.float64, "cuda")
    ref = _fwd_bwd(ms_deform_attn_pytorch, ss, lsi, v, loc, attn, grad)
    ker = _fwd_bwd(msda_triton.ms_deform_attn_triton, ss, lsi, v, loc, attn, grad)
    assert max(_rel(k, r) for k, r in zip(ker, ref)) < 1e-12  # computed in float64
    # Only value needs a gradient; then only the locations.
    v_req = v.clone().requires_grad_()
    msda_triton.ms_deform_attn_triton(v_req, ss, lsi, loc, attn).backward(grad)
    assert _rel(v_req.grad, ref[1]) < 1e-12
    loc_req = loc.clone().requires_grad_()
    msda_triton.ms_deform_attn_triton(v, ss, lsi, loc_req, attn).backward(grad)
    assert _rel(loc_req.grad, ref[2]) < 1e-12
    # Non-contiguous inputs and zero queries.
    v_nc = v.transpose(2, 3).contiguous().transpose(2, 3)
    out = msda_triton.ms_deform_attn_triton(v_nc, ss, lsi, loc, attn)
    assert _rel(out, ref[0]) < 1e-12
    empty = msda_triton.ms_deform_attn_triton(v, ss, lsi, loc[:, :0], attn[:, :0])
    assert empty.shape == (2, 0, 4 * 16)


if __name__ == "__main__":
    sys.exit(_interpreter_main())
