"""Reading runs back (``metrics.json``, ``config.yaml``) and writing the comparison table (markdown + json).

``metrics.json`` is detectron2's JSONWriter output: one JSON object per line, keyed by ``iteration``. Training lines
carry ``total_loss``, ``loss_*``, ``time`` (s/iteration), ``stage``; evaluation lines carry ``bbox/AP``,
``bbox/AP50``, ``bbox/APs``, ``bbox/AP-<class>``, ... (the evaluator's results, flattened). The final evaluation of a
training run is logged at ``iteration == MAX_ITER``. A resumed run appends to the same file, so iterations between the
last checkpoint and an interruption appear twice: the later line wins.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sdconet.data.atomic import atomic_write_text

from .runs import RunSpec, RunState, eval_dir, run_state

__all__ = ["HEADLINE", "RunResult", "read_metrics", "read_run", "write_table"]

logger = logging.getLogger(__name__)

#: headline columns of the table (COCO bbox metrics, percent)
HEADLINE = ("AP", "AP50", "AP75", "APs", "APm", "APl")
EVAL_PREFIX = "bbox/"


def read_metrics(path: Path) -> Tuple[Dict[int, dict], Dict[int, dict]]:
    """``(train, evals)``: training scalars and evaluation results by iteration (later lines win).

    Lines that are not JSON objects with an integer ``iteration`` are skipped with a warning naming the file and line
    (a run killed mid-write leaves a torn last line).
    """
    train: Dict[int, dict] = {}
    evals: Dict[int, dict] = {}
    path = Path(path)
    if not path.is_file():
        return train, evals
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                it = int(rec["iteration"])
            except (ValueError, KeyError, TypeError):
                logger.warning("%s:%d: not a metrics record, skipped", path, lineno)
                continue
            ev = {k[len(EVAL_PREFIX) :]: v for k, v in rec.items() if k.startswith(EVAL_PREFIX)}
            if ev:
                evals.setdefault(it, {}).update(ev)
            tr = {k: v for k, v in rec.items() if not k.startswith(EVAL_PREFIX) and k != "iteration"}
            if any(k.endswith("loss") or k.startswith("loss_") for k in tr):
                train[it] = {**train.get(it, {}), **tr}
    return train, evals


def _load_yaml(path: Path) -> dict:
    import yaml

    with Path(path).open(encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _get(d: dict, dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def _finite(v) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


@dataclass
class RunResult:
    """What the table and plots need from one run directory."""

    name: str
    label: str
    config: str
    seed: int
    state: str
    output_dir: str
    schedule: dict = field(default_factory=dict)
    protocol: str = ""
    evaluated: str = ""  # where the headline numbers come from
    eval_iteration: Optional[int] = None
    metrics: Dict[str, Optional[float]] = field(default_factory=dict)
    per_class: Dict[str, Optional[float]] = field(default_factory=dict)
    sec_per_iter: Dict[str, Optional[float]] = field(default_factory=dict)
    train_wall_s: Optional[float] = (
        None  # wall-clock of the driver's training invocations (driver_runs.jsonl)
    )
    curves: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("curves")
        return d


def _schedule(cfg: dict) -> dict:
    """The resolved recipe of a run (iterations and the epochs they stand for) from its ``config.yaml``."""
    from sdconet.engine.schedule import scale_recipe

    s = cfg.get("SOLVER", {})
    ipe = s.get("ITERS_PER_EPOCH", -1)
    out = {
        "ims_per_batch": s.get("IMS_PER_BATCH"),
        "base_lr": s.get("BASE_LR"),
        "iters_per_epoch": ipe,
        "max_iter": s.get("MAX_ITER"),
        "steps": list(s.get("STEPS", [])),
        "sr_start_iter": s.get("SR_START_ITER"),
        "recipe_epochs": s.get("MAX_EPOCHS"),
        "recipe_steps_epochs": list(s.get("STEPS_EPOCHS", [])),
        "recipe_sr_start_epoch": s.get("SR_START_EPOCH"),
        "budget_epochs": s.get("BUDGET_EPOCHS", 0),
    }
    budget = out["budget_epochs"] or 0
    if budget > 0 and (out["recipe_epochs"] or 0) > 0:
        r = scale_recipe(
            max_epochs=out["recipe_epochs"],
            steps_epochs=out["recipe_steps_epochs"],
            sr_start_epoch=out["recipe_sr_start_epoch"],
            budget_epochs=budget,
        )
        out.update(epochs=r.max_epochs, steps_epochs=list(r.steps_epochs), sr_start_epoch=r.sr_start_epoch)
    else:
        out.update(
            epochs=out["recipe_epochs"],
            steps_epochs=out["recipe_steps_epochs"],
            sr_start_epoch=out["recipe_sr_start_epoch"],
        )
    arch = _get(cfg, "MODEL.META_ARCHITECTURE", "SDCoNet")
    if arch == "SDCoNet":
        out["variant"] = _get(cfg, "MODEL.SDCONET.VARIANT", "sdconet")
        out["has_sr"] = out["variant"] in ("dino_sr", "sdconet", "serial")
    else:  # a detectron2 detector, optionally with the SR add-on (MODEL.SR_BRANCH.ENABLED)
        out["has_sr"] = bool(_get(cfg, "MODEL.SR_BRANCH.ENABLED", False))
        out["variant"] = arch + ("+SR" if out["has_sr"] else "")
    return out


def _protocol(cfg: dict) -> str:
    """Evaluation protocol and area frame of a run, from its config (issue-11 keys when present)."""
    proto = _get(cfg, "TEST.COCO_PROTOCOL", "coco")
    ranges = _get(cfg, "TEST.AREA_RANGES", "coco")
    frame = _get(cfg, "TEST.AREA_FRAME", "hr")
    dets = _get(cfg, "TEST.COCO_MAX_DETS", 100)
    return (
        f"protocol {proto} (maxDets {dets}), area ranges {ranges}, measured in the {frame.upper()} tile frame"
    )


def _sec_per_iter(train: Dict[int, dict], sr_start_iter: Optional[int]) -> Dict[str, Optional[float]]:
    def med(its):
        vals = [train[i]["time"] for i in its if _finite(train[i].get("time")) is not None]
        return statistics.median(vals) if vals else None

    its = sorted(train)
    if sr_start_iter is None or sr_start_iter < 0:
        return {"all": med(its)}
    return {
        "all": med(its),
        "stage1": med([i for i in its if i < sr_start_iter]),
        "stage2": med([i for i in its if i >= sr_start_iter]),
    }


def _train_wall(path: Path) -> Optional[float]:
    if not path.is_file():
        return None
    total = 0.0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") in ("train", "resume"):
            total += float(rec.get("wall_s") or 0.0)
    return total or None


def read_run(run: RunSpec) -> RunResult:
    """Read a run back. Headline numbers: ``<run>/eval_final/metrics.json`` when the final checkpoint was re-evaluated
    there (``--reevaluate``), else the training's own evaluation at ``MAX_ITER`` (the final checkpoint)."""
    d = run.output_dir
    state = run_state(d)
    res = RunResult(run.name, run.label, str(run.config), run.seed, state.value, str(d))
    cfg_path = d / "config.yaml"
    cfg = _load_yaml(cfg_path) if cfg_path.is_file() else {}
    if cfg:
        res.schedule = _schedule(cfg)
    train, evals = read_metrics(d / "metrics.json")
    res.curves = {
        "loss": sorted(
            (i, v["total_loss"]) for i, v in train.items() if _finite(v.get("total_loss")) is not None
        ),
        "loss_sr": sorted(
            (i, v["loss_sr"]) for i, v in train.items() if _finite(v.get("loss_sr")) is not None
        ),
        "evals": sorted((i, {k: evals[i].get(k) for k in HEADLINE}) for i in evals),
    }
    res.sec_per_iter = _sec_per_iter(
        train, res.schedule.get("sr_start_iter") if res.schedule.get("has_sr") else None
    )
    res.train_wall_s = _train_wall(d / "driver_runs.jsonl")
    final: Optional[dict] = None
    re_cfg_path = eval_dir(run) / "config.yaml"
    _, re_evals = read_metrics(eval_dir(run) / "metrics.json")
    if re_evals:
        res.eval_iteration = res.schedule.get("max_iter")
        final = re_evals[max(re_evals)]
        res.evaluated = f"model_final.pth re-evaluated (--eval-only) in {eval_dir(run).name}/"
        res.protocol = _protocol(_load_yaml(re_cfg_path) if re_cfg_path.is_file() else cfg)
    elif state is RunState.FINISHED and evals:
        max_iter = res.schedule.get("max_iter")
        last = max(evals)
        if max_iter is not None and last != max_iter:
            logger.warning("%s: last evaluation at iteration %d, not MAX_ITER %d", run.name, last, max_iter)
        res.eval_iteration = last
        final = evals[last]
        res.evaluated = "final checkpoint, evaluated at the end of training"
        res.protocol = _protocol(cfg)
    if final is not None:
        res.metrics = {k: _finite(final.get(k)) for k in HEADLINE}
        res.per_class = {k[3:]: _finite(v) for k, v in final.items() if k.startswith("AP-")}
    return res


def _fmt(v: Optional[float], nd: int = 1) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _describe_schedule(s: dict) -> str:
    if not s:
        return "unknown (no config.yaml)"
    ipe = s.get("iters_per_epoch")
    txt = f"{_fmt(s.get('epochs'), 2)} epochs = {s.get('max_iter')} iterations ({ipe}/epoch, batch {s.get('ims_per_batch')})"
    if s.get("budget_epochs"):
        f = s["budget_epochs"] / s["recipe_epochs"]
        txt += (
            f"; the {s['recipe_epochs']}-epoch recipe scaled by {s['budget_epochs']}/{s['recipe_epochs']} = {f:.4f}: "
            f"SR from epoch {_fmt(s.get('sr_start_epoch'), 3)} (recipe: {s['recipe_sr_start_epoch']}), "
            f"LR ×0.1 at epochs {[round(e, 3) for e in s.get('steps_epochs', [])]} "
            f"(recipe: {s['recipe_steps_epochs']}) -- the same fractions of the run"
        )
    txt += f"; iterations: SR from {s.get('sr_start_iter')} (SR variants only), LR steps {s.get('steps')}"
    return txt


def write_table(
    results: Sequence[RunResult],
    out_dir: Path,
    *,
    title: str,
    notes: Sequence[str] = (),
    commands_file: Optional[str] = None,
    stem: str = "results",
) -> Tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` (atomically) into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes: List[str] = []
    for r in results:
        for c in r.per_class:
            if c not in classes:
                classes.append(c)
    lines = [f"# {title}", ""]
    schedules = {
        json.dumps({k: v for k, v in r.schedule.items() if k not in ("variant", "has_sr")}, sort_keys=True)
        for r in results
        if r.schedule
    }
    protocols = {r.protocol for r in results if r.protocol}
    evaluated = {r.evaluated for r in results if r.evaluated}
    if len(schedules) == 1:
        lines.append(
            f"- Schedule (all runs): {_describe_schedule(next(r.schedule for r in results if r.schedule))}."
        )
    for p in sorted(protocols):
        lines.append(f"- Evaluation: COCO bbox AP (%), {p}.")
    for e in sorted(evaluated):
        lines.append(f"- Checkpoint: {e}.")
    lines += [f"- {n}" for n in notes]
    if commands_file:
        lines.append(f"- Exact commands: `{commands_file}`.")
    lines.append("")
    head = ["run", "variant", "seed", *HEADLINE, "s/it stage 1", "s/it stage 2", "train h", "state"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 4) + "---|"]
    for r in results:
        spi = r.sec_per_iter
        s1 = spi.get("stage1", spi.get("all"))
        s2 = spi.get("stage2")
        row = [r.label, str(r.schedule.get("variant", "")), str(r.seed)]
        row += [_fmt(r.metrics.get(k)) for k in HEADLINE]
        wall = None if r.train_wall_s is None else r.train_wall_s / 3600
        row += [_fmt(s1, 2), _fmt(s2, 2), _fmt(wall, 2), r.state]
        lines.append("| " + " | ".join(row) + " |")
    if classes:
        lines += ["", "Per-class AP (%):", ""]
        lines += ["| run | seed | " + " | ".join(classes) + " |", "|---|---|" + "---:|" * len(classes)]
        for r in results:
            lines.append(
                f"| {r.label} | {r.seed} | " + " | ".join(_fmt(r.per_class.get(c)) for c in classes) + " |"
            )
    if len(schedules) > 1:
        lines += ["", "Schedules differ between runs:", ""]
        lines += [f"- {r.label} (seed {r.seed}): {_describe_schedule(r.schedule)}" for r in results]
    md = out_dir / f"{stem}.md"
    js = out_dir / f"{stem}.json"
    atomic_write_text(md, "\n".join(lines) + "\n")
    payload = {
        "title": title,
        "notes": list(notes),
        "commands": commands_file,
        "runs": [r.to_json() for r in results],
    }
    atomic_write_text(js, json.dumps(payload, indent=2) + "\n")
    return md, js
