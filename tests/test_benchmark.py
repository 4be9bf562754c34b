"""tools/benchmark.py and its helpers (sdconet.evaluation.complexity / speed / peer_ddetr), on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdconet.evaluation.complexity import FLOP_COUNTERS, inference_flops, module_flops
from sdconet.evaluation.speed import PeakMemory, TimingStats, profile_share, time_interleaved
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "benchmark.py"

FLOPS_FIELDS = {
    "variant", "size", "counter", "fvcore_error", "params_total", "params_inference", "params_by_child",
    "gflops", "by_module", "by_operator", "unsupported",
}  # fmt: skip
SPEED_FIELDS = {
    "variant", "device", "size", "dtype", "msda_backend", "msda_backend_used", "compile", "first_call_ms",
    "latency_b1", "images_per_s_b1", "weights_mb", "kept_token_ratio", "mem_b1", "throughput", "mem_batch",
    "error",
}  # fmt: skip
TIMING_FIELDS = {
    "runs",
    "median_ms",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "p10_ms",
    "p90_ms",
    "samples_ms",
}
MEM_FIELDS = {"peak_mb", "baseline_mb", "kind"}
PROFILE_FIELDS = {
    "time_kind", "total_ms", "source_ms", "source_share", "ops_ms", "ops_share", "kernel_match_ms",
    "unattributed_ms", "wall_ms", "top_ops",
    "variant", "device", "size", "dtype", "msda_backend",
}  # fmt: skip
META_FIELDS = {
    "hostname", "platform", "python", "torch", "cpu", "cpu_count", "torch_threads", "loadavg", "device", "cuda",
    "gpu", "date", "argv", "transformers", "model", "msda_backends", "settings", "paper", "elapsed_s",
    "loadavg_end",
}  # fmt: skip


# --- FLOP counting ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("counter", FLOP_COUNTERS)
def test_linear_and_conv_flops_are_exact(counter):
    lin = nn.Linear(48, 20)
    report = module_flops(lin, (torch.randn(3, 48),), counter=counter)
    assert report.gflops * 1e9 == pytest.approx(48 * 20, abs=1e-6)  # per image, multiply-add = 1
    assert report.counter == counter
    assert report.by_module[""] == pytest.approx(report.gflops)

    conv = nn.Conv2d(4, 6, kernel_size=3, padding=1, bias=False)
    report = module_flops(conv, (torch.randn(2, 4, 10, 12),), counter=counter)
    assert report.gflops * 1e9 == pytest.approx(6 * 4 * 3 * 3 * 10 * 12, abs=1e-6)


def test_module_flops_rejects_unknown_counter():
    with pytest.raises(ValueError, match="counter"):
        module_flops(nn.Linear(2, 2), (torch.randn(1, 2),), counter="ptflops")


def test_inference_flops_tiny_model_breakdown():
    model = build_sdconet(SDCoNetConfig.tiny(variant="dino"))
    model.train()
    report = inference_flops(model, (64, 64), counter="fvcore")
    assert model.training  # the mode is restored
    assert report.gflops > 0
    parts = report.by_module["encoder"] + report.by_module["detector"]
    assert parts == pytest.approx(report.gflops, rel=1e-6)
    assert "sr_decoder" not in report.by_module or report.by_module["sr_decoder"] == 0
    torch_report = inference_flops(model, (64, 64), counter="torch")
    # The counters differ only in what they leave out (norms/grid_sample vs attention kernels): a few %.
    assert torch_report.gflops == pytest.approx(report.gflops, rel=0.1)


# --- timing and memory --------------------------------------------------------------------------------------
def test_timing_stats_summary():
    stats = TimingStats.from_samples([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.runs, stats.median_ms, stats.min_ms, stats.max_ms) == (5, 3.0, 1.0, 5.0)
    assert stats.mean_ms == pytest.approx(3.0)
    assert stats.p10_ms == pytest.approx(1.4) and stats.p90_ms == pytest.approx(4.6)
    assert stats.samples_ms == [5.0, 1.0, 3.0, 2.0, 4.0]
    with pytest.raises(ValueError):
        TimingStats.from_samples([])


def test_time_interleaved_runs_round_robin():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    stats = time_interleaved(fns, device=torch.device("cpu"), warmup=1, runs=3)
    assert order == ["a", "b"] * 4
    assert stats["a"].runs == stats["b"].runs == 3
    with pytest.raises(ValueError):
        time_interleaved({}, device=torch.device("cpu"))


def test_peak_memory_is_the_peak_of_live_cpu_tensors():
    mib = 1024 * 1024
    with PeakMemory(torch.device("cpu")) as mem:
        a = torch.ones(8 * mib // 4)
        b = torch.ones(16 * mib // 4)
        del a
        c = torch.ones(4 * mib // 4)  # 16 + 4 < 8 + 16: the peak was before this allocation
        del b, c
    assert mem.kind == "cpu_tensors"
    assert mem.peak_mb == pytest.approx(24.0, abs=0.1)


def _matmul_part(x):
    return (x @ x).sum()


def _sampling_part(x):
    grid = torch.rand(1, 64, 64, 2) * 2 - 1
    return F.grid_sample(x[None, None], grid, align_corners=False).sum()


def test_profile_share_attributes_operators_to_their_source():
    x = torch.randn(256, 256)

    def fn():
        return _matmul_part(x) + _sampling_part(x)

    prof = profile_share(fn, device=torch.device("cpu"), source_needles=("_sampling_part",))
    assert 0 < prof["source_share"] < 1
    assert 0 < prof["ops_share"] <= prof["source_share"]  # grid_sampler is one of the sampling part's ops
    assert prof["total_ms"] > 0 and prof["top_ops"]


# --- the command-line tool ----------------------------------------------------------------------------------
def _run_tool(*args, timeout=240):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def _tool_module():
    spec = importlib.util.spec_from_file_location("sdconet_benchmark_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_documents_the_tool(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _tool_module().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("sdconet-joint", "serial", "--peer", "--quick", "--msda-backends", "--profile", "GFLOPs"):
        assert word in text


def test_tool_end_to_end_tiny_cpu(tmp_path):
    out = tmp_path / "bench.json"
    variants = "dino,sdconet-joint,serial"
    proc = _run_tool(
        "--tiny", "--device", "cpu", "--variants", variants, "--dtypes", "fp32,bf16", "--quick", "--runs", "2",
        "--batch", "2", "--tp-runs", "1", "--profile", "--no-peer", "--sizes", "64", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Latency (batch 1" in proc.stdout and "GFLOPs" in proc.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"meta", "flops", "speed", "profile", "targets", "skipped"}
    assert META_FIELDS <= set(report["meta"])
    assert report["meta"]["model"] == "tiny" and report["meta"]["date"]

    names = variants.split(",")  # the peer has its own, optional test
    flops = {r["variant"]: r for r in report["flops"]}
    assert set(flops) == set(names)
    for row in flops.values():
        assert FLOPS_FIELDS <= set(row), row.get("error")
        assert row["gflops"] > 0 and row["counter"] in FLOP_COUNTERS
        assert row["params_inference"] <= row["params_total"]
    joint, serial = flops["sdconet-joint"], flops["serial"]
    assert joint["params_inference"] < joint["params_total"]  # the SR decoder is training-only
    assert serial["params_inference"] == serial["params_total"]  # the serial variant needs it to detect
    assert serial["gflops"] > joint["gflops"]

    speed = report["speed"]
    assert {(r["variant"], r["dtype"]) for r in speed} == {(n, d) for n in names for d in ("fp32", "bf16")}
    for row in speed:
        assert SPEED_FIELDS <= set(row)
        assert row["error"] is None, row["error"]
        assert TIMING_FIELDS <= set(row["latency_b1"]) and row["latency_b1"]["runs"] == 2
        assert row["latency_b1"]["median_ms"] > 0 and row["images_per_s_b1"] > 0
        assert row["throughput"]["batch"] == 2 and row["throughput"]["images_per_s"] > 0
        assert MEM_FIELDS <= set(row["mem_b1"]) and MEM_FIELDS <= set(row["mem_batch"])
        assert row["weights_mb"] > 0 and row["device"] == "cpu" and row["msda_backend_used"]
    kept = {r["variant"]: r["kept_token_ratio"] for r in speed if r["dtype"] == "fp32"}
    assert kept["dino"] == 1.0 and 0 < kept["sdconet-joint"] < 1

    assert report["profile"]
    for row in report["profile"]:
        assert PROFILE_FIELDS <= set(row)
        assert 0 < row["source_share"] < 1  # the deformable-attention core is found, and is not everything
    targets = {t["target"] for t in report["targets"]}
    assert len(targets) == 6
    assert all({"value", "threshold", "op", "met"} <= set(t) for t in report["targets"])


def test_tool_compile_both_interleaves_eager_and_compiled(tmp_path):
    """--compile both: the compiled model is timed beside the eager one (aot_eager: compiles in seconds)."""
    out = tmp_path / "compile.json"
    report = _tool_module().main(
        ["--tiny", "--device", "cpu", "--variants", "sdconet-joint", "--no-flops", "--dtypes", "fp32", "--quick",
         "--runs", "2", "--warmup", "1", "--tp-runs", "0", "--no-peer", "--sizes", "64", "--compile", "both",
         "--compile-backend", "aot_eager", "--out", str(out)]
    )  # fmt: skip
    rows = {r["variant"]: r for r in report["speed"]}
    assert set(rows) == {"sdconet-joint", "sdconet-joint@compiled"}
    assert rows["sdconet-joint"]["compile"] is False and rows["sdconet-joint@compiled"]["compile"] is True
    for row in rows.values():
        assert row["error"] is None and row["latency_b1"]["runs"] == 2 and row["first_call_ms"] > 0
    assert rows["sdconet-joint@compiled"]["kept_token_ratio"] == rows["sdconet-joint"]["kept_token_ratio"]


def test_tool_rejects_bad_arguments(capsys):
    tool = _tool_module()
    for argv, word in ((["--variants", "dino,nonsense"], "nonsense"), (["--sizes", "100"], "--sizes")):
        with pytest.raises(SystemExit) as exit_info:
            tool.parse_args(argv)
        assert exit_info.value.code != 0 and word in capsys.readouterr().err


def test_peer_is_counted_beside_the_variants(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "peer.json"
    _tool_module().main(
        ["--tiny", "--device", "cpu", "--variants", "dino", "--no-speed", "--peer", "--out", str(out)]
    )
    flops = {r["variant"]: r for r in json.loads(out.read_text())["flops"]}
    assert set(flops) == {"dino", "peer-ddetr"}
    assert flops["peer-ddetr"]["gflops"] > 0 and flops["peer-ddetr"]["counter"] == "fvcore"
