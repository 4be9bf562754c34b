"""Run planning: one :class:`RunSpec` per (config, seed), its training/evaluation command, and its state on disk
(new, unfinished -> resume, finished -> skip).

A run directory is a detectron2 ``OUTPUT_DIR``: ``config.yaml`` (resolved), ``metrics.json`` (one JSON object per
line), ``last_checkpoint`` (name of the newest checkpoint) and ``model_final.pth`` when training completed.
"""

from __future__ import annotations

import enum
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = [
    "DEFAULT_TRAIN_NET",
    "FINAL_CHECKPOINT",
    "RunSpec",
    "RunState",
    "build_command",
    "eval_dir",
    "format_command",
    "plan_runs",
    "run_state",
]

#: projects/SDCoNet/train_net.py of this checkout
DEFAULT_TRAIN_NET = Path(__file__).resolve().parents[2] / "train_net.py"
FINAL_CHECKPOINT = "model_final.pth"
#: sub-directory of a run where ``--reevaluate`` writes the evaluation of its final checkpoint
EVAL_SUBDIR = "eval_final"


class RunState(str, enum.Enum):
    NEW = "new"  # nothing trained yet
    UNFINISHED = "unfinished"  # a checkpoint exists, no model_final.pth: resume
    FINISHED = "finished"  # model_final.pth exists


@dataclass
class RunSpec:
    """One training run.

    Attributes:
        name: unique run name (directory under the output root).
        label: what the table calls it (e.g. "DINO+SR").
        config: the yaml given to ``--config-file``.
        seed: ``SEED``.
        output_dir: the run's ``OUTPUT_DIR``.
        opts: ``KEY VALUE`` overrides common to the suite (budget, device, datasets, ...).
    """

    name: str
    label: str
    config: Path
    seed: int
    output_dir: Path
    opts: List[str] = field(default_factory=list)


def plan_runs(
    entries: Sequence[Tuple[str, Path]],
    *,
    seeds: Sequence[int],
    output_root: Path,
    opts: Sequence[str] = (),
) -> List[RunSpec]:
    """One :class:`RunSpec` per (config, seed). Names are ``<config stem>_s<seed>``.

    Raises:
        ValueError: on duplicate configs (two runs would share a directory) or no seed.
    """
    if not seeds:
        raise ValueError("--seeds: at least one seed")
    runs: List[RunSpec] = []
    seen: Dict[str, str] = {}
    for label, config in entries:
        stem = Path(config).stem
        if stem in seen:
            raise ValueError(f"config {config} appears twice (runs would share output/{stem}_s*)")
        seen[stem] = label
        for seed in seeds:
            name = f"{stem}_s{seed}"
            runs.append(RunSpec(name, label, Path(config), int(seed), Path(output_root) / name, list(opts)))
    return runs


def run_state(output_dir: Path) -> RunState:
    """State of a run directory (see :class:`RunState`)."""
    d = Path(output_dir)
    if (d / FINAL_CHECKPOINT).is_file():
        return RunState.FINISHED
    if (d / "last_checkpoint").is_file():
        return RunState.UNFINISHED
    return RunState.NEW


def eval_dir(run: RunSpec) -> Path:
    return run.output_dir / EVAL_SUBDIR


def build_command(
    run: RunSpec,
    *,
    train_cmd: Optional[Sequence[str]] = None,
    resume: bool = False,
    evaluate: bool = False,
) -> List[str]:
    """argv of the training (or, with ``evaluate``, the evaluation of ``model_final.pth``) of ``run``.

    Args:
        train_cmd: the program prefix (default: this Python + ``projects/SDCoNet/train_net.py``).
        resume: add ``--resume`` (continue from ``OUTPUT_DIR/last_checkpoint``: same iteration, stage and LR).
        evaluate: ``--eval-only MODEL.WEIGHTS <run>/model_final.pth OUTPUT_DIR <run>/eval_final``.
    """
    prefix = list(train_cmd) if train_cmd else [sys.executable, str(DEFAULT_TRAIN_NET)]
    cmd = prefix + ["--config-file", str(run.config)]
    if evaluate:
        cmd += ["--eval-only"]
    elif resume:
        cmd += ["--resume"]
    cmd += list(run.opts) + ["SEED", str(run.seed)]
    if evaluate:
        cmd += ["MODEL.WEIGHTS", str(run.output_dir / FINAL_CHECKPOINT), "OUTPUT_DIR", str(eval_dir(run))]
    else:
        cmd += ["OUTPUT_DIR", str(run.output_dir)]
    return cmd


def format_command(cmd: Sequence[str], env: Optional[Dict[str, str]] = None) -> str:
    """A shell line (quoted) for the commands file; ``env`` variables are prefixed."""
    pre = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    line = " ".join(shlex.quote(str(c)) for c in cmd)
    return f"{pre} {line}" if pre else line
