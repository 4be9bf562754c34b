"""Latency, throughput, peak memory and operator-share profiling of inference callables (framework-free).

Conventions: times are wall-clock milliseconds of one call, read with ``time.perf_counter`` after the device
is synchronised on both sides, so asynchronous CUDA work is inside the measured interval. Every measurement
starts with warm-up calls that are not recorded (lazy initialisation, kernel compilation, allocator growth).
Several callables are timed *interleaved* (A B C A B C ...) so that load changes on a shared machine hit all
of them alike and their ratio stays meaningful.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
#: Percentiles reported as the spread of a timing.
LOW_PERCENTILE, HIGH_PERCENTILE = 10, 90

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, dtype_name: str):
    """``torch.autocast`` for ``"bf16"``/``"fp16"``, a null context for ``"fp32"``.

    Raises:
        ValueError: on an unknown dtype name.
    """
    if dtype_name not in DTYPES:
        raise ValueError(f"autocast_context: dtype must be one of {sorted(DTYPES)}, got {dtype_name!r}")
    dtype = DTYPES[dtype_name]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] of already sorted values."""
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


@dataclass
class TimingStats:
    """Summary of repeated timings in milliseconds.

    Attributes:
        runs: number of recorded calls.
        median_ms, mean_ms, std_ms, min_ms, max_ms: the usual statistics.
        p10_ms, p90_ms: 10th / 90th percentiles (the reported spread).
        samples_ms: every recorded time, in call order.
    """

    runs: int
    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float
    samples_ms: List[float]

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> TimingStats:
        """Summarise ``samples_ms`` (at least one value).

        Raises:
            ValueError: on an empty sequence.
        """
        values = [float(v) for v in samples_ms]
        if not values:
            raise ValueError("TimingStats.from_samples: no samples")
        ordered = sorted(values)
        return cls(
            runs=len(values),
            median_ms=float(statistics.median(values)),
            mean_ms=float(statistics.fmean(values)),
            std_ms=float(statistics.pstdev(values)) if len(values) > 1 else 0.0,
            min_ms=ordered[0],
            max_ms=ordered[-1],
            p10_ms=_percentile(ordered, LOW_PERCENTILE),
            p90_ms=_percentile(ordered, HIGH_PERCENTILE),
            samples_ms=values,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    device: torch.device,
    warmup: int = 2,
    runs: int = 10,
    progress: Optional[Callable[[Iterable[int]], Iterable[int]]] = None,
) -> Dict[str, TimingStats]:
    """Time several callables round-robin (A B C A B C ...), each synchronised on ``device``.

    Args:
        fns: name -> zero-argument callable (one inference each).
        device: the device the callables run on (synchronised around every call).
        warmup: unrecorded rounds first.
        runs: recorded rounds (each callable runs once per round).
        progress: optional wrapper of the round iterator (e.g. ``tqdm``).

    Returns:
        name -> :class:`TimingStats` over ``runs`` calls.

    Raises:
        ValueError: if ``fns`` is empty or ``runs < 1`` or ``warmup < 0``.
    """
    if not fns:
        raise ValueError("time_interleaved: no callables given")
    if runs < 1 or warmup < 0:
        raise ValueError(
            f"time_interleaved: need runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})"
        )
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    rounds: Iterable[int] = range(runs)
    if progress is not None:
        rounds = progress(rounds)
    for _ in rounds:
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: TimingStats.from_samples(values) for name, values in samples.items()}


def time_callable(
    fn: Callable[[], object], *, device: torch.device, warmup: int = 2, runs: int = 10
) -> TimingStats:
    """Time one callable (see :func:`time_interleaved`)."""
    return time_interleaved({"fn": fn}, device=device, warmup=warmup, runs=runs)["fn"]


def throughput(
    fn: Callable[[], object], batch: int, *, device: torch.device, warmup: int = 1, runs: int = 3
) -> dict:
    """Images per second of a callable that processes ``batch`` images per call.

    Returns:
        ``{"batch", "images_per_s" (batch / median call time), "timing": TimingStats dict}``.
    """
    stats = time_callable(fn, device=device, warmup=warmup, runs=runs)
    return {"batch": int(batch), "images_per_s": batch * 1e3 / stats.median_ms, "timing": stats.to_dict()}


def _read_status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _profiled_peak_bytes(prof) -> int:
    """Peak of live tensor bytes over a profiled region, from its allocation/free records in time order.

    Allocations are the operators' *self* memory (so nested operators are not counted twice); frees outside
    operators come as ``[memory]`` records.
    """
    changes = []
    for evt in prof.events():
        if evt.name == "[memory]":
            changes.append((evt.time_range.start, int(evt.cpu_memory_usage)))
        elif getattr(evt, "self_cpu_memory_usage", 0):
            changes.append((evt.time_range.start, int(evt.self_cpu_memory_usage)))
    current = peak = 0
    for _, delta in sorted(changes, key=lambda c: c[0]):
        current += delta
        peak = max(peak, current)
    return peak


class PeakMemory:
    """Context manager measuring the extra tensor memory a block of work needs at its peak.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated at entry (tensors only, the caching
    allocator's reserve is not counted). CPU: the block runs under ``torch.profiler`` with memory profiling
    and the peak of live tensor bytes allocated inside it is reported (the same quantity; the profiler slows
    the block down, so never time inside this context). ``baseline_mb`` is then the process's resident size.

    Attributes (after exit):
        peak_mb: extra MiB of tensors at the peak over the level at entry, or None.
        baseline_mb: MiB in use at entry (CUDA: allocated tensors; CPU: process RSS on Linux), or None.
        kind: ``"cuda_allocated"``, ``"cpu_tensors"`` or None.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.peak_mb: Optional[float] = None
        self.baseline_mb: Optional[float] = None
        self.kind: Optional[str] = None
        self._prof = None

    def __enter__(self) -> PeakMemory:
        synchronize(self.device)
        if self.device.type == "cuda":
            self.kind = "cuda_allocated"
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / _MIB
        elif self.device.type == "cpu":
            from torch.profiler import ProfilerActivity, profile

            self.kind = "cpu_tensors"
            rss = _read_status_kib("VmRSS")
            self.baseline_mb = None if rss is None else rss / 1024
            self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / _MIB - self.baseline_mb
        elif self._prof is not None:
            self._prof.__exit__(*exc)
            self.peak_mb = _profiled_peak_bytes(self._prof) / _MIB
            self._prof = None

    def to_dict(self) -> dict:
        return {"peak_mb": self.peak_mb, "baseline_mb": self.baseline_mb, "kind": self.kind}


def tensor_megabytes(module: torch.nn.Module) -> float:
    """MiB held by a module's parameters and buffers."""
    total = sum(t.numel() * t.element_size() for t in module.parameters())
    total += sum(t.numel() * t.element_size() for t in module.buffers())
    return total / _MIB


def _is_operator(evt) -> bool:
    """Operator records (``aten::addmm`` ...), as opposed to Python-frame and module records."""
    name = evt.name
    return "::" in name and not name.startswith("<") and "(" not in name and not name.startswith("nn.Module")


def _called_from(evt, needles: Sequence[str]) -> bool:
    """Whether ``evt`` or a profiler ancestor (a Python-frame record, or a recorded stack) names a needle."""
    node = evt
    while node is not None:
        if node is not evt and any(n in node.name for n in needles):
            return True
        for frame in getattr(node, "stack", None) or ():
            if any(n in frame for n in needles):
                return True
        node = getattr(node, "cpu_parent", None)
    return False


def _is_device_record(evt) -> bool:
    return str(getattr(evt, "device_type", "CPU")).rsplit(".", 1)[-1] != "CPU"


def profile_share(
    fn: Callable[[], object],
    *,
    device: torch.device,
    source_needles: Sequence[str] = ("ms_deform_attn_pytorch",),
    op_names: Sequence[str] = ("aten::grid_sampler_2d",),
    kernel_needles: Sequence[str] = (),
    warmup: int = 1,
    top: int = 8,
) -> dict:
    """Share of one call's operator time spent in code from given source files, and in given operators.

    Runs ``fn`` once under ``torch.profiler`` with Python stacks. A record belongs to the source when one of
    its calling Python frames names one of ``source_needles`` (e.g. the file name ``ms_deform_attn_pytorch``).
    Times are *self* times, so nothing is counted twice:

    * CPU: the self CPU time of operator records (Python-frame records are skipped, so the Python overhead
      between operators is in ``wall_ms`` only);
    * CUDA: the GPU time of the kernels each CPU-side record launched itself (operators and runtime launch
      calls). ``total_ms`` is the summed time of all kernel records; kernels the profiler attached to no
      CPU record (e.g. launched outside any operator) are in ``unattributed_ms``. Kernels whose names contain
      one of ``kernel_needles`` are summed in ``kernel_match_ms`` (e.g. a Triton kernel's name).

    Returns:
        ``{"time_kind", "total_ms", "source_ms", "source_share", "ops_ms", "ops_share", "kernel_match_ms",
        "unattributed_ms", "wall_ms", "top_ops"}`` where ``wall_ms`` is the synchronised wall time of the
        profiled call and ``top_ops`` the ``top`` most expensive records ``[name, ms, share]``.
    """
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    for _ in range(warmup):
        fn()
    activities = [ProfilerActivity.CPU]
    on_cuda = device.type == "cuda"
    if on_cuda:
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    with profile(activities=activities, with_stack=True) as prof:
        start = time.perf_counter()
        fn()
        synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1e3

    attributed = source = ops = kernel_match = kernel_total = 0.0
    per_op: Dict[str, float] = {}
    for evt in prof.events():
        if _is_device_record(evt):
            duration = float(getattr(evt, "device_time_total", 0.0) or 0.0)
            kernel_total += duration
            if any(n in evt.name for n in kernel_needles):
                kernel_match += duration
            continue
        if on_cuda:
            t = float(getattr(evt, "self_device_time_total", 0.0) or 0.0)
        else:
            t = float(evt.self_cpu_time_total) if _is_operator(evt) else 0.0
        if t <= 0:
            continue
        attributed += t
        per_op[evt.name] = per_op.get(evt.name, 0.0) + t
        if evt.name in op_names:
            ops += t
        if _called_from(evt, source_needles):
            source += t
    total = max(kernel_total, attributed) if on_cuda else attributed
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    share = (lambda x: x / total) if total > 0 else (lambda x: float("nan"))
    return {
        "time_kind": "cuda_kernels" if on_cuda else "cpu_self",
        "total_ms": total / 1e3,
        "source_ms": source / 1e3,
        "source_share": share(source),
        "ops_ms": ops / 1e3,
        "ops_share": share(ops),
        "kernel_match_ms": kernel_match / 1e3,
        "unattributed_ms": max(0.0, total - attributed) / 1e3,
        "wall_ms": wall_ms,
        "top_ops": [[name, t / 1e3, share(t)] for name, t in ranked],
    }


def machine_info(device: torch.device) -> dict:
    """What a benchmark table must state: machine, processor, cores, load, torch/CUDA versions, GPU."""
    device = torch.device(device)
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "cuda": torch.version.cuda,
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "total_memory_mb": props.total_memory / _MIB,
            "multiprocessors": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
        }
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
