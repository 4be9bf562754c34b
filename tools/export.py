#!/usr/bin/env python
"""Export a trained SDCoNet to ONNX, check it with onnxruntime and compare CPU latency with PyTorch.

The exported graph takes ``images`` (B, 3, H, W) float32 RGB on the 0-255 scale and ``pixel_mask`` (B, H, W) bool
(True = padding, bottom/right) at the exported size, and returns ``boxes`` (B, k, 4) x1y1x2y2 normalised to each
image's valid region, ``scores`` (B, k) and ``labels`` (B, k) int64 (see ``sdconet.inference.export``). The batch
dimension is dynamic (``--static-batch`` fixes it). Needs ``pip install -e ".[export]"``.

After exporting, the tool runs onnxruntime and PyTorch on real-looking tiles (tiles of a synthetic scene at the
model's LR size, one of them padded; or ``--images`` files), prints the max abs difference of boxes and scores
and whether the top labels agree, then times both at batch 1 (interleaved) on the CPU. A summary JSON lands next
to the model. Exit code 0 = exported and within ``--tolerance``; 1 = parity check failed; 2 = bad arguments.

Example::

    python tools/export.py --config-file output/quick_synthetic/config.yaml \\
        --weights output/quick_synthetic/model_final.pth --format onnx --size 256 --output exported/sdconet.onnx
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from sdconet.data.atomic import atomic_write_json

logger = logging.getLogger("export")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config-file", required=True, help="yaml config (a run's OUTPUT_DIR/config.yaml or its source)"
    )
    p.add_argument(
        "--weights", required=True, help="checkpoint: detectron2 model_final.pth or a plain state dict"
    )
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    p.add_argument("--size", type=int, nargs="+", default=[256], help="LR input size: S or H W (default 256)")
    p.add_argument("--output", help="output file (default: <weights dir>/<weights stem>_<H>x<W>.onnx)")
    p.add_argument("--batch", type=int, default=1, help="batch of the example input (default 1)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension to --batch")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument(
        "--no-optimize", action="store_true", help="skip onnxscript's graph optimisation (faster export)"
    )
    p.add_argument(
        "--images", nargs="*", help="image files to check with (LR tiles; default: synthetic tiles)"
    )
    p.add_argument(
        "--check-tiles", type=int, default=8, help="synthetic tiles for the parity check (default 8)"
    )
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference of boxes/scores (1e-4)")
    p.add_argument("--runs", type=int, default=10, help="timed batch-1 calls per runtime (0: no timing)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for both runtimes (default: torch's)"
    )
    p.add_argument(
        "--allow-pickle", action="store_true", help="unpickle arbitrary objects (trusted files only)"
    )
    args = p.parse_args(argv)
    if len(args.size) not in (1, 2):
        p.error(f"--size takes 1 or 2 values, got {args.size}")
    args.size = (args.size[0], args.size[-1])
    if args.batch < 1 or args.check_tiles < 1:
        p.error("--batch and --check-tiles must be >= 1")
    for f in (args.config_file, args.weights, *(args.images or [])):
        if not os.path.isfile(f):
            p.error(f"file not found: {f}")
    return args


def synthetic_tiles(n: int, size, scale: int, seed: int = 0):
    """``n`` LR tiles (h, w, 3) uint8 cut from a synthetic scene and shrunk by ``scale``; the last is partial."""
    import cv2

    from sdconet.inference.synthetic_scene import make_synthetic_scene

    h, w = size
    cols = max(1, int(np.ceil(np.sqrt(n))))
    rows = -(-n // cols)
    scene = make_synthetic_scene(width=cols * w * scale, height=rows * h * scale, seed=seed).image
    tiles = []
    for i in range(n):
        r, c = divmod(i, cols)
        hr = scene[r * h * scale : (r + 1) * h * scale, c * w * scale : (c + 1) * w * scale]
        tiles.append(cv2.resize(hr, (w, h), interpolation=cv2.INTER_AREA))
    if n > 1:  # an edge tile: smaller than the export size, padded with its mask
        tiles[-1] = tiles[-1][: max(8, h * 5 // 8), : max(8, w * 3 // 4)].copy()
    return tiles


def batch_inputs(tiles: List[np.ndarray], size):
    """(B, 3, H, W) float32 0-255 padded bottom/right with 0, and the (B, H, W) padding mask."""
    h, w = size
    images = np.zeros((len(tiles), 3, h, w), np.float32)
    mask = np.ones((len(tiles), h, w), bool)
    for i, t in enumerate(tiles):
        th, tw = min(t.shape[0], h), min(t.shape[1], w)
        images[i, :, :th, :tw] = t[:th, :tw].transpose(2, 0, 1)
        mask[i, :th, :tw] = False
    return images, mask


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        print(f"export: {err}; install the export extra: pip install -e '.[export]'", file=sys.stderr)
        return 2
    from sdconet.data.image_io import read_image_rgb
    from sdconet.inference.export import (
        OnnxDetector,
        compare_outputs,
        export_onnx,
        latency_ms,
        onnx_session,
        run_onnx,
    )
    from sdconet.inference.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.from_files(args.config_file, args.weights, allow_pickle=args.allow_pickle)
    model = predictor.model.cpu().float().eval()
    detector = OnnxDetector(model, predictor.mean.flatten().tolist(), predictor.std.flatten().tolist()).eval()
    size = tuple(args.size)
    out = Path(
        args.output or Path(args.weights).with_name(f"{Path(args.weights).stem}_{size[0]}x{size[1]}.onnx")
    )
    logger.info(
        "exporting %s at %dx%d (batch %s) to %s",
        type(model).__name__,
        *size,
        "dynamic" if not args.static_batch else args.batch,
        out,
    )
    try:
        export_onnx(
            detector,
            out,
            size,
            batch=args.batch,
            dynamic_batch=not args.static_batch,
            opset=args.opset,
            optimize=not args.no_optimize,
        )
    except ValueError as err:
        print(f"export: {err}", file=sys.stderr)
        return 2
    logger.info("wrote %s (%.1f MB)", out, out.stat().st_size / 2**20)

    # ---- parity on real-looking tiles
    if args.images:
        tiles = [read_image_rgb(f) for f in args.images]
        source = "files"
    else:
        tiles = synthetic_tiles(args.check_tiles, size, predictor.sr_scale)
        source = "synthetic scene tiles"
    too_big = [t.shape[:2] for t in tiles if t.shape[0] > size[0] or t.shape[1] > size[1]]
    if too_big:
        logger.warning(
            "%d image(s) larger than %s are cropped for the check: %s", len(too_big), size, too_big[:3]
        )
    images, mask = batch_inputs(tiles, size)
    session = onnx_session(out, args.threads)
    batch_ok = args.static_batch is False or len(tiles) == args.batch
    onnx_out = {k: [] for k in ("boxes", "scores", "labels")}
    step = len(tiles) if batch_ok else args.batch
    for i in range(0, len(tiles), step):
        part = run_onnx(session, images[i : i + step], mask[i : i + step])
        for k in onnx_out:
            onnx_out[k].append(part[k])
    onnx_out = {k: np.concatenate(v) for k, v in onnx_out.items()}
    with torch.no_grad():
        ref = detector(torch.from_numpy(images), torch.from_numpy(mask))
    ref = {k: v.numpy() for k, v in zip(("boxes", "scores", "labels"), ref)}
    parity = compare_outputs(onnx_out, ref)
    ok = parity["max_abs_boxes"] <= args.tolerance and parity["max_abs_scores"] <= args.tolerance
    ok = ok and parity["top1_labels_equal"] == 1.0
    print(
        f"parity on {len(tiles)} {source} (onnxruntime vs PyTorch): "
        + ", ".join(f"{k} {v:.2e}" if k.startswith("max") else f"{k} {v:.2f}" for k, v in parity.items())
    )

    # ---- latency at batch 1
    timing = {}
    if args.runs > 0:
        one = (torch.from_numpy(images[:1]), torch.from_numpy(mask[:1]))

        def torch_call():
            with torch.no_grad():
                detector(*one)

        times = latency_ms(
            {"pytorch": torch_call, "onnxruntime": lambda: run_onnx(session, images[:1], mask[:1])},
            runs=args.runs,
        )
        timing = {k: statistics.median(v) for k, v in times.items()}
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"CPU latency, batch 1, {size[0]}x{size[1]}, {torch.get_num_threads()} threads, median of {args.runs} "
            f"interleaved: PyTorch {timing['pytorch']:.1f} ms, onnxruntime {timing['onnxruntime']:.1f} ms "
            f"(1-min load average {load:.1f})"
        )
    summary = {
        "onnx": str(out),
        "size": list(size),
        "dynamic_batch": not args.static_batch,
        "opset": args.opset,
        "check": {"tiles": len(tiles), "source": source, **parity, "tolerance": args.tolerance, "ok": ok},
        "latency_ms_batch1": timing,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }
    atomic_write_json(out.with_suffix(".json"), summary)
    if not ok:
        print(f"export: parity check FAILED (tolerance {args.tolerance})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
