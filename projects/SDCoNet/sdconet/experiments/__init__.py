"""Experiment driver (framework-free): named suites of training runs, run planning and resume, the comparison table
and training curves. ``tools/run_experiments.py`` is the command line; the trainings themselves are subprocesses of
``projects/SDCoNet/train_net.py`` (or any command that writes detectron2's ``metrics.json``)."""

from .plots import plot_curves
from .results import RunResult, read_metrics, read_run, write_table
from .runs import RunSpec, RunState, build_command, plan_runs, run_state
from .suites import SUITES, suite_specs

__all__ = [
    "SUITES",
    "RunResult",
    "RunSpec",
    "RunState",
    "build_command",
    "plan_runs",
    "plot_curves",
    "read_metrics",
    "read_run",
    "run_state",
    "suite_specs",
    "write_table",
]
