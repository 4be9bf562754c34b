"""Launching the runs of a suite as subprocesses: sequentially or N at once, resuming unfinished runs.

Every invocation is appended to ``<run>/driver_runs.jsonl`` (command, start, wall seconds, return code, the
iteration it resumed from) and its stdout+stderr to ``<run>/driver.log``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .runs import RunSpec, RunState, build_command, eval_dir, run_state

__all__ = ["Job", "launch", "plan_jobs"]

logger = logging.getLogger(__name__)


@dataclass
class Job:
    run: RunSpec
    kind: str  # "train" | "resume" | "evaluate"
    cmd: List[str]
    resumed_from: Optional[str] = None


def _last_checkpoint(run: RunSpec) -> Optional[str]:
    p = run.output_dir / "last_checkpoint"
    return p.read_text().strip() if p.is_file() else None


def plan_jobs(
    runs: Sequence[RunSpec],
    *,
    train_cmd: Optional[Sequence[str]] = None,
    resume: bool = True,
    reevaluate: bool = False,
) -> List[Job]:
    """The jobs still to do: train new runs, resume (or, with ``resume=False``, refuse) unfinished ones, skip finished
    ones; with ``reevaluate`` also evaluate every final checkpoint that has no ``eval_final/metrics.json`` yet.

    Raises:
        RuntimeError: an unfinished run and ``resume=False`` (restarting would silently discard its progress).
    """
    jobs: List[Job] = []
    for run in runs:
        state = run_state(run.output_dir)
        if state is RunState.UNFINISHED:
            if not resume:
                raise RuntimeError(
                    f"{run.output_dir} holds an unfinished run (last_checkpoint {_last_checkpoint(run)}); "
                    "rerun with --resume, or delete the directory to start over"
                )
            jobs.append(
                Job(
                    run, "resume", build_command(run, train_cmd=train_cmd, resume=True), _last_checkpoint(run)
                )
            )
        elif state is RunState.NEW:
            jobs.append(Job(run, "train", build_command(run, train_cmd=train_cmd)))
        if reevaluate and not (eval_dir(run) / "metrics.json").is_file():
            jobs.append(Job(run, "evaluate", build_command(run, train_cmd=train_cmd, evaluate=True)))
    return jobs


def _start(job: Job, env: Dict[str, str]) -> subprocess.Popen:
    job.run.output_dir.mkdir(parents=True, exist_ok=True)
    log = open(job.run.output_dir / "driver.log", "a", encoding="utf-8")  # noqa: SIM115 (closed in launch)
    log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.kind}: {' '.join(job.cmd)}\n")
    log.flush()
    proc = subprocess.Popen(job.cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc._sdconet_log = log  # type: ignore[attr-defined]
    return proc


def _record(job: Job, start: float, rc: int) -> None:
    rec = {
        "kind": job.kind,
        "cmd": job.cmd,
        "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
        "wall_s": round(time.time() - start, 1),
        "returncode": rc,
        "resumed_from": job.resumed_from,
        "load_avg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    with open(job.run.output_dir / "driver_runs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def launch(
    jobs: Sequence[Job], *, max_parallel: int = 1, env: Optional[Dict[str, str]] = None, poll_s: float = 0.5
) -> Dict[str, int]:
    """Run ``jobs`` with at most ``max_parallel`` at once (an evaluation waits for its run's training). Returns the
    return code per ``"<run name>:<kind>"``. A failing job is logged and does not stop the others; the evaluation of a
    run whose training failed is skipped (code -1)."""
    if max_parallel < 1:
        raise ValueError(f"--jobs must be >= 1 (got {max_parallel})")
    env = dict(os.environ if env is None else env)
    pending = list(jobs)
    running: Dict[int, tuple] = {}
    codes: Dict[str, int] = {}
    busy_runs: set = set()
    total = len(pending)
    try:
        _loop(pending, running, codes, busy_runs, total, max_parallel, env, poll_s)
    except KeyboardInterrupt:
        for proc, job, start in running.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            proc._sdconet_log.close()  # type: ignore[attr-defined]
            _record(job, start, proc.returncode)
        logger.error("interrupted: %d running job(s) stopped; rerun the same command to resume", len(running))
        raise
    return codes


def _loop(pending, running, codes, busy_runs, total, max_parallel, env, poll_s) -> None:
    done = 0
    while pending or running:
        started = True
        while pending and len(running) < max_parallel and started:
            started = False
            for k, job in enumerate(pending):
                if job.run.name in busy_runs:
                    continue
                if (
                    job.kind == "evaluate"
                    and codes.get(f"{job.run.name}:train", codes.get(f"{job.run.name}:resume", 0)) != 0
                ):
                    codes[f"{job.run.name}:evaluate"] = -1
                    logger.error("[%s] training failed: not evaluated", job.run.name)
                    pending.pop(k)
                    done += 1
                    started = True
                    break
                if job.kind == "evaluate" and run_state(job.run.output_dir) is not RunState.FINISHED:
                    codes[f"{job.run.name}:evaluate"] = -1
                    logger.error("[%s] no %s to evaluate", job.run.name, "model_final.pth")
                    pending.pop(k)
                    done += 1
                    started = True
                    break
                pending.pop(k)
                extra = f" from {job.resumed_from}" if job.resumed_from else ""
                logger.info("[%d/%d] %s %s%s -> %s", done + len(running) + 1, total, job.kind, job.run.name,
                            extra, job.run.output_dir / "driver.log")  # fmt: skip
                proc = _start(job, env)
                running[proc.pid] = (proc, job, time.time())
                busy_runs.add(job.run.name)
                started = True
                break
        if not running:
            continue
        time.sleep(poll_s)
        for pid, (proc, job, start) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            proc._sdconet_log.close()  # type: ignore[attr-defined]
            _record(job, start, rc)
            codes[f"{job.run.name}:{job.kind}"] = rc
            busy_runs.discard(job.run.name)
            del running[pid]
            done += 1
            wall = time.time() - start
            if rc == 0:
                logger.info("%s %s finished in %.0f s", job.kind, job.run.name, wall)
            else:
                logger.error("%s %s FAILED (exit %d) after %.0f s; see %s", job.kind, job.run.name, rc, wall,
                             job.run.output_dir / "driver.log")  # fmt: skip
