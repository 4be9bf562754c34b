#!/usr/bin/env python
"""Peak memory of whole-scene prediction on a huge GeoTIFF (the raster is made here, never stored in the repo).

1. Writes a ``--size`` x ``--size`` x 4 uint16 GeoTIFF (tiled, DEFLATE, one synthetic block repeated:
   ``tools/make_synthetic_geotiff.py --repeat``) unless ``--raster`` names one.
2. Writes a tiny SDCoNet checkpoint (``quick_synthetic.yaml`` sizes, random weights: memory and speed do not depend
   on the weights) unless ``--weights`` is given.
3. Runs ``tools/predict.py`` on it under ``/usr/bin/time -v`` and reports the maximum resident set size, the wall
   time and the throughput from the run's ``summary.json``.

Example (the number in docs/INFERENCE.md)::

    python tools/bench_raster_memory.py --work /tmp/bench_raster --size 20000 --sparse 0.1 -- --tile 512
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "projects" / "SDCoNet" / "configs" / "quick_synthetic.yaml"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="folder for the raster, the checkpoint and the predictions")
    p.add_argument("--size", type=int, default=20000, help="raster side (20000)")
    p.add_argument("--sparse", type=float, default=1.0, help="fraction of the blocks holding data (1.0)")
    p.add_argument("--raster", help="use this raster instead of making one")
    p.add_argument("--config-file", default=str(QUICK), help="model config (quick_synthetic.yaml)")
    p.add_argument("--weights", help="checkpoint (default: a tiny random one made here)")
    p.add_argument("predict_args", nargs="*", help="extra tools/predict.py arguments (after --)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    raster = Path(args.raster) if args.raster else work / f"synthetic_{args.size}_{args.sparse:g}.tif"
    if not raster.exists():
        cmd = [sys.executable, str(ROOT / "tools" / "make_synthetic_geotiff.py"), "--out", str(raster)]
        subprocess.run(cmd + ["--size", str(args.size), "--repeat", "--sparse", str(args.sparse)], check=True)
    weights = args.weights
    if weights is None:
        import torch

        from sdconet.config_io import load_yaml_config, sdconet_config_from_dict
        from sdconet.modeling.build import build_sdconet

        torch.manual_seed(0)
        model = build_sdconet(sdconet_config_from_dict(load_yaml_config(args.config_file), num_classes=3))
        weights = str(work / "tiny_random.pth")
        torch.save(
            {"model": {f"core.{k}": v for k, v in model.state_dict().items()}, "iteration": 0}, weights
        )
    out = work / "predictions"
    cmd = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "tools" / "predict.py")]
    cmd += [
        "--config-file",
        args.config_file,
        "--weights",
        weights,
        "--input",
        str(raster),
        "--output",
        str(out),
    ]
    cmd += ["--bands", "3,2,1", "--geo", "--overwrite", "--quiet", *args.predict_args]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    sys.stdout.write(proc.stdout[-3000:])
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        sys.stderr.write(proc.stderr[-5000:])
        return proc.returncode or 1
    peak_gib = int(match.group(1)) / 2**20
    summary = json.loads((out / "summary.json").read_text())
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    report = {
        "raster": str(raster),
        "size": [args.size, args.size],
        "peak_rss_gib": round(peak_gib, 3),
        "wall_seconds": round(wall, 1),
        "sparse": args.sparse,
        "tiles": summary["tiles"],
        "tiles_skipped_nodata": summary["tiles_skipped_nodata"],
        "tiles_per_second": summary["tiles_per_second"],
        "megapixels_per_second": summary["megapixels_per_second"],
        "detections": summary["detections"],
        "load_average": load,
        "command": cmd,
    }
    (work / "bench_raster_memory.json").write_text(json.dumps(report, indent=1))
    print(
        f"\n| raster | data blocks | peak RSS | wall | tiles (nodata skipped) | tiles/s | MPix/s | load avg |\n"
        f"|---|---:|---:|---:|---:|---:|---:|---|\n"
        f"| {args.size}x{args.size}x4 uint16 | {args.sparse:.0%} | {peak_gib:.2f} GiB | {wall:.0f} s | "
        f"{summary['tiles']} ({summary['tiles_skipped_nodata']}) | {summary['tiles_per_second']} | "
        f"{summary['megapixels_per_second']} | {' '.join(load)} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
