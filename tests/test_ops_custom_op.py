"""The Triton deformable-attention kernels as torch.library custom ops (CPU checks).

Without a GPU the kernels run only under Triton's interpreter, so this file checks what does not need them in
process (registration, fake implementations, one opaque op in traced forward and backward graphs) and runs the
rest in a subprocess with ``TRITON_INTERPRET=1``: ``torch.library.opcheck`` and the dispatcher choosing the op
inside ``torch.compile(..., fullgraph=True)`` with outputs and gradients equal to the ``grid_sample`` path.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from sdconet.modeling.ops import ms_deform_attn_triton as msda_triton

HAS_TRITON = importlib.util.find_spec("triton") is not None
SHAPES = [(5, 7), (3, 4)]
OP = torch.ops.sdconet.ms_deform_attn_triton.default
OP_BWD = torch.ops.sdconet.ms_deform_attn_triton_backward.default


def _inputs(batch=2, nq=6, heads=2, head_dim=8, points=2, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(SHAPES)
    lsi = torch.tensor([0, SHAPES[0][0] * SHAPES[0][1]])
    total = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, total, heads, head_dim, generator=g)
    loc = torch.rand(batch, nq, heads, len(SHAPES), points, 2, generator=g) * 1.2 - 0.1
    attn = torch.rand(batch, nq, heads, len(SHAPES), points, generator=g)
    if requires_grad:
        value, loc, attn = (t.requires_grad_() for t in (value, loc, attn))
    return value, ss, lsi, loc, attn


def test_ops_are_registered_with_fake_implementations():
    assert msda_triton.OP_FORWARD == "sdconet::ms_deform_attn_triton"
    value, ss, lsi, loc, attn = _inputs()
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = OP(value, ss, lsi, loc, attn, 32, 4)
        assert out.shape == (2, 6, 16) and out.dtype == value.dtype
        gv, gl, ga = OP_BWD(out, value, ss, lsi, loc, attn, True, False, 32, 4)
        assert gv.shape == value.shape and gl.numel() == 0 and ga.numel() == 0
        gv, gl, ga = OP_BWD(out, value, ss, lsi, loc, attn, False, True, 32, 4)
        assert gv.numel() == 0 and gl.shape == loc.shape and ga.shape == attn.shape
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(ValueError, match="attention_weights"):
        OP(value, ss, lsi, loc, attn[..., :1], 32, 4)


_TRACE_SCRIPT = r"""
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from sdconet.modeling.ops import ms_deform_attn_triton as msda_triton

OP = torch.ops.sdconet.ms_deform_attn_triton.default
OP_BWD = torch.ops.sdconet.ms_deform_attn_triton_backward.default
g = torch.Generator().manual_seed(0)
ss, lsi = torch.tensor([(5, 7), (3, 4)]), torch.tensor([0, 35])
value = torch.randn(2, 47, 2, 8, generator=g).requires_grad_()
loc = (torch.rand(2, 6, 2, 2, 2, 2, generator=g) * 1.2 - 0.1).requires_grad_()
attn = torch.rand(2, 6, 2, 2, 2, generator=g).requires_grad_()

def step(value, ss, lsi, loc, attn):
    out = msda_triton.ms_deform_attn_triton(value, ss, lsi, loc, attn)
    return torch.autograd.grad(out.square().sum(), (value, loc, attn))

graph = make_fx(step, tracing_mode="fake")(value, ss, lsi, loc, attn)
targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
assert targets.count(OP) == 1 and targets.count(OP_BWD) == 1, targets
assert not any("triton" in str(t) and t not in (OP, OP_BWD) for t in targets), targets
print("TRACE OK")
"""


def _run_script(script: str, **env_extra: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter with the project on the path.

    A backward pass in the pytest process would start autograd's worker threads, after which the fork-based
    multi-process tests (tests/test_d2_ddp.py) can no longer run backward: traced backward graphs and the
    interpreter checks run in a subprocess.
    """
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(repo / "projects" / "SDCoNet"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)


def test_traced_forward_and_backward_hold_one_opaque_op_each():
    """What torch.compile / AOTAutograd see: the kernels as single nodes (no Triton launcher traced)."""
    proc = _run_script(_TRACE_SCRIPT)
    assert proc.returncode == 0 and "TRACE OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def _interpreter_script() -> str:
    return r"""
import torch
from sdconet.modeling.dino.ms_deform_attn import MSDeformAttn
from sdconet.modeling.ops import set_msda_backend
from sdconet.modeling.ops import ms_deform_attn_triton as msda_triton

torch.manual_seed(0)
shapes = [(5, 7), (3, 4)]
ss, lsi = torch.tensor(shapes), torch.tensor([0, 35])
value = torch.randn(2, 47, 2, 8, dtype=torch.float64)
loc = torch.rand(2, 6, 2, 2, 2, 2, dtype=torch.float64) * 1.2 - 0.1
attn = torch.rand(2, 6, 2, 2, 2, dtype=torch.float64)
torch.library.opcheck(
    torch.ops.sdconet.ms_deform_attn_triton.default,
    (value.requires_grad_(), ss, lsi, loc.requires_grad_(), attn.requires_grad_(), 32, 4),
    test_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
)
print("OPCHECK OK")

module = MSDeformAttn(16, num_heads=2, num_levels=2, num_points=2).double()
with torch.no_grad():
    for p in module.parameters():
        p.normal_(0, 0.3)
query = torch.randn(2, 9, 16, dtype=torch.float64)
refs = torch.rand(2, 9, 2, 2, dtype=torch.float64)
values = torch.randn(2, 47, 16, dtype=torch.float64)
seen = []

def capture(gm, example_inputs):
    seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
    from torch._dynamo.backends.common import aot_autograd
    return aot_autograd(fw_compiler=lambda g, _: g, bw_compiler=lambda g, _: g)(gm, example_inputs)

def run(backend, compiled):
    set_msda_backend(backend)
    try:
        fn = torch.compile(module, backend=capture, fullgraph=True) if compiled else module
        v = values.clone().requires_grad_()
        out = fn(query, refs, v, shapes, None)
        out.square().sum().backward()
        return out.detach(), v.grad
    finally:
        set_msda_backend(None)

ref_out, ref_grad = run("pytorch", False)
out, grad = run("triton", True)
assert any("sdconet.ms_deform_attn_triton" in s for s in seen), seen
err = max(float((out - ref_out).abs().max()), float((grad - ref_grad).abs().max()))
assert err < 1e-9, err
print("DISPATCH COMPILE OK", err)
"""


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_opcheck_and_compiled_dispatch_under_the_interpreter():
    proc = _run_script(_interpreter_script(), TRITON_INTERPRET="1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "OPCHECK OK" in proc.stdout and "DISPATCH COMPILE OK" in proc.stdout
