"""Count what stops a model from compiling: host synchronisations and ``torch.compile`` graph breaks.

* :class:`HostSyncCounter` is a ``TorchDispatchMode`` that counts the ATen ops which copy a value from the
  device to the host (``aten._local_scalar_dense``, behind ``.item()``, ``int()``, ``float()``, ``bool()`` of
  a tensor) or whose output shape depends on tensor values (``nonzero``, ``masked_select``, ``unique``, ...).
  Because it sits at the dispatcher it also sees syncs hidden inside opaque functions. ``Tensor.tolist()``
  does not go through the dispatcher on CPU, so the counter also wraps ``Tensor.tolist`` while it is active.
* :func:`graph_breaks` runs ``torch._dynamo.explain`` and returns the break count and the reasons.

Both work on CPU; they are used by the tests, ``tools/benchmark.py --audit`` and docs/BENCHMARKS.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter", "count_host_syncs", "graph_breaks", "SYNC_OPS"]

#: ATen ops that need a device -> host transfer of a value (scalar reads, data-dependent output shapes).
SYNC_OPS = frozenset(
    {
        "aten._local_scalar_dense",
        "aten.nonzero",
        "aten.masked_select",
        "aten.unique",
        "aten._unique",
        "aten._unique2",
        "aten.unique_dim",
        "aten.unique_consecutive",
        "aten.repeat_interleave.Tensor",
        "aten.equal",
        "aten.is_nonzero",
    }
)


def _op_name(func) -> str:
    name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
    full = str(func)
    # repeat_interleave with a tensor of repeats is data dependent, with an int it is not
    if full.startswith("aten.repeat_interleave.Tensor"):
        return "aten.repeat_interleave.Tensor"
    return name


class HostSyncCounter(TorchDispatchMode):
    """Counts host-synchronising ops (see :data:`SYNC_OPS`) and ``Tensor.tolist`` calls while active.

    Attributes:
        counts: ``Counter`` op name -> calls (only sync ops; ``"Tensor.tolist"`` for tolist calls).
        total_ops: number of ATen ops dispatched (to tell an empty run from a clean one).
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()
        self.total_ops = 0
        self._orig_tolist = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total_ops += 1
        name = _op_name(func)
        if name in SYNC_OPS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        orig = torch.Tensor.tolist
        counts = self.counts

        def tolist(t, *a, **k):
            counts["Tensor.tolist"] += 1
            return orig(t, *a, **k)

        self._orig_tolist = orig
        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._orig_tolist
        return super().__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_host_syncs(fn: Callable, *args, **kwargs) -> Tuple[Dict[str, int], object]:
    """Run ``fn(*args, **kwargs)`` under :class:`HostSyncCounter`.

    Returns:
        ``(counts, result)``: op name -> number of host-synchronising calls, and ``fn``'s result.
    """
    with HostSyncCounter() as counter:
        result = fn(*args, **kwargs)
    return dict(counter.counts), result


def graph_breaks(fn: Callable, *args, **kwargs) -> Tuple[int, List[str]]:
    """``torch._dynamo.explain(fn)(*args, **kwargs)``: number of graph breaks and their reasons (first line).

    Resets dynamo before and after, so earlier compilations do not hide breaks.
    """
    torch._dynamo.reset()
    try:
        explanation = torch._dynamo.explain(fn)(*args, **kwargs)
    finally:
        torch._dynamo.reset()
    reasons = []
    for b in explanation.break_reasons:
        where = b.user_stack[-1] if b.user_stack else None
        loc = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where is not None else ""
        reasons.append(str(b.reason).splitlines()[0] + loc)
    return explanation.graph_break_count, reasons
