"""tools/run_experiments.py orchestration (framework-free): planning, resume, table, curves, commands.

The trainings are tests/fake_train_net.py, which writes OUTPUT_DIR the way detectron2's trainer does (CI has no
detectron2). The real path (train_net.py on NWPU VHR-10-Split) is documented in docs/ACCURACY.md.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from sdconet.experiments import read_metrics, suite_specs
from sdconet.experiments.suites import SUITES

ROOT = Path(__file__).resolve().parents[1]
FAKE = f"{sys.executable} {ROOT / 'tests' / 'fake_train_net.py'}"


def _tool():
    spec = importlib.util.spec_from_file_location(
        "tool_run_experiments", ROOT / "tools" / "run_experiments.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _configs(tmp_path):
    """Two recipes of 4 epochs (LR step 3, SR from 2): a detection-only and an SR variant."""
    paths = []
    for variant in ("dino", "sdconet"):
        cfg = {"MODEL": {"SDCONET": {"VARIANT": variant}},
               "SOLVER": {"MAX_EPOCHS": 4, "STEPS_EPOCHS": [3], "SR_START_EPOCH": 2}}  # fmt: skip
        p = tmp_path / f"{variant}_fake.yaml"
        p.write_text(yaml.safe_dump(cfg))
        paths.append(p)
    return paths


def _calls(run_dir):
    return [json.loads(line) for line in (run_dir / "fake_calls.jsonl").read_text().splitlines()]


def test_crash_resume_table_curves_and_commands(tmp_path, monkeypatch):
    tool = _tool()
    cfgs = _configs(tmp_path)
    out = tmp_path / "exp"
    argv = ["--configs", *map(str, cfgs), "--epochs", "2", "--seeds", "0", "--output-root", str(out),
            "--train-cmd", FAKE, "--jobs", "2", "TEST.AREA_FRAME", "hr"]  # fmt: skip
    monkeypatch.setenv("FAKE_CRASH", "sdconet_fake_s0:7")
    assert tool.main(argv) == 1  # one run failed: not complete
    dino, sdc = out / "dino_fake_s0", out / "sdconet_fake_s0"
    assert (dino / "model_final.pth").is_file() and not (sdc / "model_final.pth").is_file()
    assert (sdc / "last_checkpoint").read_text() == "model_0000004.pth"
    first = json.loads((out / "results.json").read_text())["runs"]
    assert (
        first[0]["metrics"]["AP"] is not None
        and first[1]["metrics"] == {}
        and first[1]["state"] == "unfinished"
    )

    monkeypatch.delenv("FAKE_CRASH")
    assert tool.main(argv) == 0
    assert len(_calls(dino)) == 1  # finished run skipped
    calls = _calls(sdc)
    assert [c["start_iter"] for c in calls] == [0, 5] and "--resume" in calls[1]["argv"]
    runs = {r["name"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    s = runs["sdconet_fake_s0"]
    # the 4-epoch recipe scaled to 2 epochs: SR from epoch 1 (iteration 5), LR step at epoch 1.5 (iteration 8)
    sched = s["schedule"]
    assert (sched["max_iter"], sched["sr_start_iter"], sched["steps"]) == (10, 5, [8])
    assert sched["sr_start_epoch"] == 1.0 and sched["steps_epochs"] == [1.5] and sched["budget_epochs"] == 2
    assert s["eval_iteration"] == 10 and s["state"] == "finished"
    assert s["metrics"]["APl"] is None  # NaN (no large objects) is "no value", not 0
    assert set(s["per_class"]) == {"plane", "ship", "tank"}
    assert s["sec_per_iter"]["stage1"] == pytest.approx(0.5) and s["sec_per_iter"]["stage2"] == pytest.approx(
        1.2
    )
    assert runs["dino_fake_s0"]["metrics"]["AP"] != s["metrics"]["AP"]
    md = (out / "results.md").read_text()
    assert "SR from epoch 1.000 (recipe: 2)" in md and "same fractions" in md
    assert "measured in the HR tile frame" in md and "| plane | ship | tank |" in md
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    cmds = (out / "commands.sh").read_text()
    assert cmds.count("--config-file") == 2 and "SOLVER.BUDGET_EPOCHS 2" in cmds and "SEED 0" in cmds


def test_reevaluate_scores_every_final_checkpoint_again(tmp_path):
    tool = _tool()
    cfgs = _configs(tmp_path)
    out = tmp_path / "exp"
    base = ["--configs", str(cfgs[0]), "--epochs", "1", "--seeds", "0", "1", "--output-root", str(out),
            "--train-cmd", FAKE]  # fmt: skip
    assert tool.main(base) == 0
    assert tool.main(base + ["--reevaluate"]) == 0
    for seed in (0, 1):
        assert (out / f"dino_fake_s{seed}" / "eval_final" / "metrics.json").is_file()
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert (
        all("re-evaluated" in r["evaluated"] for r in runs)
        and runs[0]["metrics"]["AP"] != runs[1]["metrics"]["AP"]
    )


def test_no_resume_refuses_an_unfinished_run_and_dry_run_launches_nothing(tmp_path, monkeypatch, capsys):
    tool = _tool()
    cfgs = _configs(tmp_path)
    out = tmp_path / "exp"
    argv = ["--configs", str(cfgs[1]), "--epochs", "2", "--output-root", str(out), "--train-cmd", FAKE]
    monkeypatch.setenv("FAKE_CRASH", "sdconet_fake_s0:6")
    assert tool.main(argv) == 1
    monkeypatch.delenv("FAKE_CRASH")
    assert tool.main(argv + ["--no-resume"]) == 2
    assert tool.main(argv + ["--dry-run"]) == 0
    assert "would resume: sdconet_fake_s0 (from model_0000004.pth)" in capsys.readouterr().out
    assert len(_calls(out / "sdconet_fake_s0")) == 1


def test_bad_arguments_are_named(tmp_path):
    tool = _tool()
    assert tool.main(["--configs", str(tmp_path / "missing.yaml")]) == 2
    with pytest.raises(SystemExit):
        tool.parse_args(["--suite", "table6", "ODD"])
    with pytest.raises(ValueError, match="unknown suite"):
        suite_specs("table99", "cpu")


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("size", ["paper", "cpu"])
def test_every_suite_config_exists(suite, size):
    if size == "cpu" and suite in ("table2", "table5"):  # detectron2's baselines exist at the paper size only
        with pytest.raises(ValueError, match="no 'cpu' config for 'Cascade R-CNN|--size paper"):
            suite_specs(suite, size)
        return
    entries = suite_specs(suite, size)
    assert len(entries) >= 3 and all(p.is_file() for _, p in entries)


def test_read_metrics_dedups_resumed_iterations_and_skips_torn_lines(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text(
        '{"iteration": 3, "total_loss": 2.0}\n{"iteration": 4, "total_loss": 1.9}\n{"iteration": '
        '\n{"iteration": 4, "total_loss": 1.5}\n{"iteration": 4, "bbox/AP": 3.0, "bbox/AP-a": 1.0}\n'
    )
    train, evals = read_metrics(p)
    assert train == {3: {"total_loss": 2.0}, 4: {"total_loss": 1.5}}
    assert evals == {4: {"AP": 3.0, "AP-a": 1.0}}
