#!/usr/bin/env python
"""Time one SDCoNet training step on the CPU and count its host synchronisations and graph breaks.

A step is forward + losses + backward + AdamW step on a fixed random batch (the SR branch enabled, i.e. stage 2,
so every loss is computed). Reported as JSON on stdout (and ``--out``):

* ``step_ms``: median and all samples of ``--steps`` timed steps after ``--warmup`` untimed ones;
* ``host_syncs``: ATen ops of one step that read a value back to the host (``aten._local_scalar_dense`` behind
  ``.item()``/``int()``/``bool()``, ``nonzero``, ...) and ``Tensor.tolist`` calls, counted with a
  ``TorchDispatchMode`` (on a GPU each is a device synchronisation; the Hungarian matcher's one cost transfer per
  output set is host work by nature);
* ``graph_breaks``: ``torch._dynamo.explain`` of forward + losses (``--no-explain`` to skip).

The script only needs ``sdconet`` importable, so the same file measures any checkout (before/after comparisons:
run it alternately with ``PYTHONPATH=<checkout>/projects/SDCoNet``; see docs/BENCHMARKS.md).

Example::

    python tools/bench_train_step.py --config full --size 256 --batch 2 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {
    "aten._local_scalar_dense",
    "aten.nonzero",
    "aten.masked_select",
    "aten.unique",
    "aten._unique2",
    "aten.unique_consecutive",
    "aten.equal",
    "aten.is_nonzero",
}


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in SYNC_OPS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self._orig = torch.Tensor.tolist
        counts = self.counts

        def tolist(t, *a, **k):
            counts["Tensor.tolist"] += 1
            return self._orig(t, *a, **k)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._orig
        return super().__exit__(*exc)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", choices=("tiny", "full"), default="tiny", help="SDCoNetConfig.tiny() or defaults"
    )
    p.add_argument("--variant", default="sdconet", help="model variant (default sdconet)")
    p.add_argument("--size", type=int, default=None, help="LR input side (default: tiny 64, full 256)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--objects", type=int, default=6, help="ground-truth boxes per image")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-explain", action="store_true", help="skip the graph-break count")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import sdconet
    from sdconet.modeling.build import build_sdconet
    from sdconet.modeling.config import SDCoNetConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = (
        SDCoNetConfig.tiny(variant=args.variant)
        if args.config == "tiny"
        else SDCoNetConfig(variant=args.variant)
    )
    size = args.size or (64 if args.config == "tiny" else 256)
    model = build_sdconet(cfg).train()
    model.set_sr_enabled(True)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, size, size, generator=g)
    hr = torch.nn.functional.interpolate(
        images, scale_factor=cfg.sr.scale, mode="bilinear", align_corners=False
    )
    targets = [
        {
            "labels": torch.randint(0, cfg.num_classes, (args.objects,), generator=g),
            "boxes": torch.cat(
                [
                    torch.rand(args.objects, 2, generator=g) * 0.6 + 0.2,
                    torch.rand(args.objects, 2, generator=g) * 0.2 + 0.02,
                ],
                1,
            ),
        }
        for _ in range(args.batch)
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        opt.zero_grad(set_to_none=True)
        losses = model(images, None, targets, hr)
        sum(losses.values()).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    with _Counter() as counter:
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    breaks = None
    if not args.no_explain:
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(lambda: model(images, None, targets, hr))()
        breaks = explanation.graph_break_count
        torch._dynamo.reset()
    result = {
        "sdconet": os.path.dirname(sdconet.__file__),
        "config": args.config,
        "variant": args.variant,
        "size": size,
        "batch": args.batch,
        "threads": args.threads,
        "step_ms": {"median": statistics.median(times), "samples": [round(t, 1) for t in times]},
        "host_syncs": dict(counter.counts),
        "host_syncs_total": sum(counter.counts.values()),
        "graph_breaks": breaks,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
