#!/usr/bin/env python
"""A stand-in for projects/SDCoNet/train_net.py in the driver's CI test (CI has no detectron2).

It speaks the same command line (``--config-file``, ``--resume``, ``--eval-only``, ``KEY VALUE`` overrides) and
leaves what detectron2's trainer leaves in ``OUTPUT_DIR``: ``config.yaml`` with the resolved schedule keys,
``metrics.json`` (JSONWriter lines: training scalars per iteration, ``bbox/*`` results at each evaluation, the final
one at ``iteration == MAX_ITER``), ``model_%07d.pth`` checkpoints with ``last_checkpoint``, ``model_final.pth``.
The schedule is resolved with the project's own framework-free arithmetic (5 iterations per epoch).

``FAKE_CRASH=<run dir name>:<iteration>`` makes a fresh (not resumed) run of that name exit 3 before that iteration.
Every call is appended to ``OUTPUT_DIR/fake_calls.jsonl`` (argv, start iteration).
"""

import json
import math
import os
import sys
from pathlib import Path

import yaml

from sdconet.engine.schedule import EpochSchedule, scale_recipe

IPE = 5
CLASSES = ("plane", "ship", "tank")


def _set(d, dotted, value):
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def _parse(argv):
    cfg_file, resume, eval_only, opts = None, False, False, []
    it = iter(argv)
    for a in it:
        if a == "--config-file":
            cfg_file = next(it)
        elif a == "--resume":
            resume = True
        elif a == "--eval-only":
            eval_only = True
        else:
            opts.append(a)
    return cfg_file, resume, eval_only, dict(zip(opts[::2], opts[1::2]))


def _ap(variant, seed, progress):
    base = 20 + 7 * (sum(map(ord, variant)) % 5) + seed
    return base * (1 - math.exp(-3 * progress))


def _eval_record(it, variant, seed, progress):
    ap = _ap(variant, seed, progress)
    rec = {"iteration": it, "bbox/AP": ap, "bbox/AP50": 2 * ap, "bbox/AP75": ap / 2, "bbox/APs": ap / 3,
           "bbox/APm": ap, "bbox/APl": float("nan")}  # fmt: skip
    rec.update({f"bbox/AP-{c}": ap + k for k, c in enumerate(CLASSES)})
    return rec


def main(argv):
    cfg_file, resume, eval_only, opts = _parse(argv)
    cfg = yaml.safe_load(Path(cfg_file).read_text())
    out = Path(opts["OUTPUT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    seed = int(opts.get("SEED", 0))
    s = cfg["SOLVER"]
    budget = int(opts.get("SOLVER.BUDGET_EPOCHS", 0))
    epochs, steps_e, sr_e = s["MAX_EPOCHS"], s["STEPS_EPOCHS"], s["SR_START_EPOCH"]
    if budget:
        r = scale_recipe(max_epochs=epochs, steps_epochs=steps_e, sr_start_epoch=sr_e, budget_epochs=budget)
        epochs, steps_e, sr_e = r.max_epochs, r.steps_epochs, r.sr_start_epoch
    sched = EpochSchedule.from_epochs(num_images=10, ims_per_batch=2, max_epochs=epochs, steps_epochs=steps_e,
                                      sr_start_epoch=sr_e)  # fmt: skip
    resolved = {
        "MODEL": {"SDCONET": {"VARIANT": cfg["MODEL"]["SDCONET"]["VARIANT"]}},
        "SOLVER": {**s, "BUDGET_EPOCHS": budget, "IMS_PER_BATCH": 2, "BASE_LR": 1e-4, "ITERS_PER_EPOCH": IPE,
                   "MAX_ITER": sched.max_iter, "STEPS": list(sched.steps), "SR_START_ITER": sched.sr_start_iter},
        "TEST": {"COCO_MAX_DETS": 100},
        "SEED": seed,
        "OUTPUT_DIR": str(out),
    }  # fmt: skip
    for k, v in opts.items():
        if k.startswith("TEST."):
            _set(resolved, k, v)
    (out / "config.yaml").write_text(yaml.safe_dump(resolved))
    variant = resolved["MODEL"]["SDCONET"]["VARIANT"]
    metrics = open(out / "metrics.json", "a")
    if eval_only:
        assert Path(opts["MODEL.WEIGHTS"]).is_file(), opts["MODEL.WEIGHTS"]
        metrics.write(json.dumps(_eval_record(0, variant, seed, 1.0)) + "\n")
        return 0
    start = 0
    if resume and (out / "last_checkpoint").is_file():
        start = json.loads((out / (out / "last_checkpoint").read_text().strip()).read_text())["iteration"] + 1
    with open(out / "fake_calls.jsonl", "a") as f:
        f.write(json.dumps({"argv": argv, "start_iter": start}) + "\n")
    crash = os.environ.get("FAKE_CRASH", "")
    max_iter = sched.max_iter
    for it in range(start, max_iter):
        if not resume and crash == f"{out.name}:{it}":
            metrics.write('{"iteration": ')  # a torn line, as a killed writer leaves
            return 3
        sr_on = variant in ("dino_sr", "sdconet") and it >= sched.sr_start_iter
        rec = {"iteration": it, "total_loss": 3 * math.exp(-it / max_iter) + 0.1 * ((it * 7919 + seed) % 5),
               "time": 0.5 + (0.7 if sr_on else 0.0), "stage": 2.0 if sr_on else 1.0}  # fmt: skip
        if sr_on:
            rec["loss_sr"] = 0.2
        metrics.write(json.dumps(rec) + "\n")
        if (it + 1) % IPE == 0 and it + 1 < max_iter:
            metrics.write(json.dumps(_eval_record(it, variant, seed, (it + 1) / max_iter)) + "\n")
            name = f"model_{it:07d}.pth"
            (out / name).write_text(json.dumps({"iteration": it}))
            (out / "last_checkpoint").write_text(name)
        metrics.flush()
    (out / "model_final.pth").write_text(json.dumps({"iteration": max_iter - 1}))
    (out / "last_checkpoint").write_text("model_final.pth")
    metrics.write(json.dumps(_eval_record(max_iter, variant, seed, 1.0)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
