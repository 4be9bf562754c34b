#!/usr/bin/env python
"""Run a comparison (the paper's ablation tables, or your own list of configs) and tabulate it.

    # Table VI at the CPU-scale preset (reduced widths, from scratch), 3-epoch budget, seed 0, one run at a time
    python tools/run_experiments.py --suite table6 --size cpu --epochs 3 --seeds 0

    # full size on one GPU, two trainings at once, ImageNet Swin-T weights
    python tools/run_experiments.py --suite table6 --size paper --jobs 2 MODEL.DEVICE cuda

    # your own configs; extra KEY VALUE pairs go to every run
    python tools/run_experiments.py --configs a.yaml b.yaml --seeds 0 1 --epochs 12 DATASETS.TRAIN '("my_train",)'

Each run is ``projects/SDCoNet/train_net.py`` in a subprocess with ``OUTPUT_DIR <output-root>/<config>_s<seed>``.
Running the same command again skips finished runs and resumes unfinished ones (``--resume`` is the default).
``--epochs N`` trains N epochs of each config's recipe with the SR stage switch and the LR steps moved to the same
fractions of the run (``SOLVER.BUDGET_EPOCHS``): the paper's 16 and 27 of 52 become 0.92 and 1.56 of 3. Every run is
scored at its final checkpoint; ``--reevaluate`` scores them all again with ``--eval-only`` (e.g. with a newer
evaluator). Written to the output root: ``results.md``/``results.json`` (headline COCO metrics, APs, per-class AP,
schedule, protocol), ``curves.png`` (loss and AP per evaluation), ``commands.sh`` (the exact commands).
Exit code: 0 when every run finished and was scored, 1 otherwise, 2 on bad arguments, 130 when interrupted
(Ctrl-C stops the running trainings; the same command resumes them).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from sdconet.data.atomic import atomic_write_text
from sdconet.experiments import SUITES, plan_runs, plot_curves, read_run, suite_specs, write_table
from sdconet.experiments.launch import launch, plan_jobs
from sdconet.experiments.runs import build_command, format_command
from sdconet.experiments.suites import SIZES

logger = logging.getLogger("run_experiments")

#: environment variables that change what or how fast a run trains; written into commands.sh when set
RECORDED_ENV = (
    "SDCONET_DATASETS",
    "SDCONET_MSDA_BACKEND",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--suite", choices=sorted(SUITES), help="a named comparison (the paper's tables)")
    what.add_argument("--configs", nargs="+", type=Path, help="config files to compare (label = file stem)")
    p.add_argument(
        "--size", choices=SIZES, default="cpu", help="suite configs: paper size or configs/cpu/ (cpu)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="budget: train N epochs of each recipe, stage switch and LR steps scaled (0 = full recipe)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per config and seed (SEED)")
    p.add_argument(
        "--output-root",
        type=Path,
        default=None,
        help="where runs and the table go (default output/experiments/<suite>_<size>)",
    )
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (e.g. 2-4 on one large GPU)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="MODEL.SWIN.PRETRAINED '' (random init; no ImageNet weights are downloaded)",
    )
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="resume unfinished runs (default); --no-resume stops instead",
    )
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="score every final checkpoint again with --eval-only into <run>/eval_final/",
    )
    p.add_argument("--report-only", action="store_true", help="launch nothing; tabulate what is on disk")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    p.add_argument(
        "--train-cmd",
        default=None,
        help="program prefix instead of '<python> projects/SDCoNet/train_net.py' (quoted string)",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = p.parse_args(argv)
    if len(args.opts) % 2:
        p.error(f"overrides must be KEY VALUE pairs, got {args.opts}")
    if args.epochs < 0:
        p.error("--epochs must be >= 0")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    try:
        if args.suite:
            entries = suite_specs(args.suite, args.size)
            title = f"{SUITES[args.suite][0]} -- {args.size} size"
            default_root = Path("output/experiments") / f"{args.suite}_{args.size}"
        else:
            missing = [str(c) for c in args.configs if not c.is_file()]
            if missing:
                raise ValueError(f"--configs: not found: {missing}")
            entries = [(c.stem, c) for c in args.configs]
            title = "Comparison: " + ", ".join(c.stem for c in args.configs)
            default_root = Path("output/experiments/custom")
    except ValueError as e:
        logger.error("%s", e)
        return 2
    root = (args.output_root or default_root).resolve()
    opts = []
    if args.epochs:
        opts += ["SOLVER.BUDGET_EPOCHS", str(args.epochs)]
    if args.offline:
        opts += ["MODEL.SWIN.PRETRAINED", ""]
    opts += list(args.opts)
    runs = plan_runs(entries, seeds=args.seeds, output_root=root, opts=opts)
    train_cmd = shlex.split(args.train_cmd) if args.train_cmd else None

    # The exact commands (first-time form; the driver adds --resume to continue an unfinished run).
    env = {k: os.environ[k] for k in RECORDED_ENV if k in os.environ}
    driver = ["tools/run_experiments.py", *(sys.argv[1:] if argv is None else argv)]
    lines = [
        "#!/usr/bin/env bash",
        f"# {time.strftime('%Y-%m-%d %H:%M')}: {title}",
        "# driver: python " + format_command(driver),
        f"cd {shlex.quote(os.getcwd())}",
        "set -e",
    ]
    for run in runs:
        lines.append(format_command(build_command(run, train_cmd=train_cmd), env))
    if args.reevaluate:
        lines += [format_command(build_command(r, train_cmd=train_cmd, evaluate=True), env) for r in runs]
    commands_file = root / "commands.sh"

    try:
        jobs = plan_jobs(runs, train_cmd=train_cmd, resume=args.resume, reevaluate=args.reevaluate)
    except RuntimeError as e:
        logger.error("%s", e)
        return 2
    if args.dry_run:
        print("\n".join(lines[2:]))
        for j in jobs:
            print(f"# would {j.kind}: {j.run.name}" + (f" (from {j.resumed_from})" if j.resumed_from else ""))
        return 0
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(commands_file, "\n".join(lines) + "\n")
    codes = {}
    if not args.report_only:
        logger.info(
            "%d run(s), %d job(s) to do, %d at once; output %s", len(runs), len(jobs), args.jobs, root
        )
        try:
            codes = launch(jobs, max_parallel=args.jobs)
        except KeyboardInterrupt:
            logger.error("interrupted; run the same command again to resume")
            return 130

    results = [read_run(r) for r in runs]
    notes = []
    if args.epochs:
        notes.append(f"Budget: --epochs {args.epochs} (SOLVER.BUDGET_EPOCHS); seeds {args.seeds}.")
    md, js = write_table(results, root, title=title, notes=notes, commands_file=commands_file.name)
    png = plot_curves(results, root / "curves.png", title=title)
    logger.info("table: %s (+ %s), curves: %s, commands: %s", md, js.name, png, commands_file)
    print(md.read_text())
    failed = [k for k, rc in codes.items() if rc != 0]
    unscored = [r.name for r in results if not r.metrics]
    if failed or unscored:
        logger.error("not complete: failed %s, without final metrics %s", failed, unscored)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
