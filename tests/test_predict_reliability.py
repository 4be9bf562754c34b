"""Class 1 of issue 12: no finished work is lost when a later step fails.

tools/predict.py checks its output location before any work, streams every finished scene to parts/rank0.jsonl,
names and counts per-image failures and goes on, refuses to clobber an earlier run (``--resume`` / ``--overwrite``),
merges what is done on SIGINT / SIGTERM, and a SIGKILLed run is completed by ``--resume`` to the same results as an
uninterrupted run. visualize.py and evaluate_scenes.py follow the same policy. The kill tests run the tool as a
subprocess with a tiny checkpoint made here.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sdconet.data.image_io import write_image
from sdconet.inference.run_policy import ExitCode
from sdconet.inference.synthetic_scene import make_synthetic_scene
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "projects" / "SDCoNet" / "configs" / "quick_synthetic.yaml"
NUM_SCENES = 12


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    torch.manual_seed(0)
    model = build_sdconet(SDCoNetConfig.tiny(num_classes=3))
    ckpt = root / "model_final.pth"
    torch.save({"model": {f"core.{k}": v for k, v in model.state_dict().items()}, "iteration": 1}, ckpt)
    scenes = root / "scenes"
    for i in range(NUM_SCENES):  # one 128-px tile each: quick, and many scenes to interrupt between
        write_image(scenes / f"scene_{i}.png", make_synthetic_scene(128, 128, seed=i).image)
    base = [
        "--config-file",
        str(QUICK),
        "--weights",
        str(ckpt),
        "--quiet",
        "--batch-size",
        "1",
        "--score-thresh",
        "0.0",
    ]
    return {"root": root, "scenes": scenes, "base": base}


def predict(env, *args):
    return load_tool("predict").main(env["base"] + list(args))


def read(path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def reference(env):
    """An uninterrupted run over all scenes."""
    out = env["root"] / "reference"
    assert predict(env, "--input", str(env["scenes"]), "--output", str(out), "--no-vis") == 0
    assert len(read(out / "results.json")) > 100  # score threshold 0: an untrained model still gives boxes
    return out


def test_one_unusable_image_is_named_counted_and_the_others_are_written(env, capsys):
    folder = env["root"] / "mixed"
    write_image(folder / "a.png", make_synthetic_scene(128, 128, seed=1).image)
    write_image(folder / "b_too_small.png", np.zeros((1, 1, 3), np.uint8))  # smaller than the SR factor
    write_image(folder / "c.png", make_synthetic_scene(128, 128, seed=2).image)
    out = env["root"] / "mixed_out"
    assert predict(env, "--input", str(folder), "--output", str(out)) == ExitCode.PARTIAL == 3
    err = capsys.readouterr().err
    assert "b_too_small.png" in err and "smaller than the SR factor" in err
    summary = read(out / "summary.json")
    assert summary["images_done"] == 2 and summary["images_failed"] == 1 and summary["exit_code"] == 3
    assert (
        summary["failed"][0]["file_name"].endswith("b_too_small.png")
        and summary["failed"][0]["stage"] == "plan"
    )
    images = read(out / "images.json")["images"]
    assert [Path(i["file_name"]).name for i in images] == ["a.png", "c.png"]
    assert {r["image_id"] for r in read(out / "results.json")} <= {i["id"] for i in images}
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["a.png", "c.png"]
    # Nothing usable at all: a distinct exit status.
    assert (
        predict(env, "--input", str(folder / "b_too_small.png"), "--output", str(env["root"] / "none")) == 4
    )


def test_output_location_is_checked_before_any_work(env, capsys):
    a_file = env["root"] / "a_file"
    a_file.write_text("x")
    for bad in (a_file, a_file / "below"):
        t0 = time.perf_counter()
        assert predict(env, "--input", str(env["scenes"]), "--output", str(bad)) == ExitCode.SETUP_ERROR
        assert time.perf_counter() - t0 < 5  # refused at once, not after the model was built and run
        assert str(a_file) in capsys.readouterr().err
    assert a_file.read_text() == "x"


def test_a_rerun_never_silently_clobbers_earlier_results(env, reference, capsys):
    out = env["root"] / "clobber"
    assert predict(env, "--input", str(env["scenes"] / "scene_0.png"), "--output", str(out)) == 0
    before = (out / "results.json").read_bytes()
    assert (out / "vis" / "scene_0.png").is_file() and json.loads(before)
    broken = env["root"] / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    # Without --resume / --overwrite the folder is refused and left as it was.
    assert predict(env, "--input", str(broken), "--output", str(out)) == 2
    assert "--resume" in capsys.readouterr().err and (out / "results.json").read_bytes() == before
    # --overwrite replaces the earlier run completely: no stale picture survives.
    assert predict(env, "--input", str(broken), "--output", str(out), "--overwrite") == ExitCode.NOTHING_DONE
    assert read(out / "results.json") == [] and not list((out / "vis").glob("*.png"))
    assert predict(env, "--input", str(broken), "--output", str(out), "--overwrite", "--resume") == 2
    # --resume with other settings is refused, naming what changed.
    out2 = env["root"] / "settings"
    assert predict(env, "--input", str(env["scenes"] / "scene_0.png"), "--output", str(out2), "--no-vis") == 0
    code = predict(
        env, "--input", str(env["scenes"]), "--output", str(out2), "--no-vis", "--resume", "--tile", "64"
    )
    assert code == 2 and "tile" in capsys.readouterr().err


def test_bad_ground_truth_json_is_named(env, capsys):
    gt = env["root"] / "bad_gt.json"
    gt.write_text('{"images": [\n{"id": 1,}\n]}')
    out = env["root"] / "bad_gt_out"
    assert predict(env, "--input", str(env["scenes"]), "--output", str(out), "--gt", str(gt)) == 2
    assert f"--gt '{gt}':2:" in capsys.readouterr().err
    assert not (out / "results.json").exists()


def _start(env, out, *extra):
    cmd = [sys.executable, str(ROOT / "tools" / "predict.py")] + env["base"]
    cmd += ["--input", str(env["scenes"]), "--output", str(out), "--no-vis", *extra]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )


def _wait_for_lines(out, proc, n=1, timeout=240):
    parts = out / "parts" / "rank0.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if parts.exists() and parts.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"predict.py ended early: {proc.communicate()}")
        time.sleep(0.01)
    pytest.fail("predict.py wrote no scene in time")


def test_sigkill_then_resume_equals_an_uninterrupted_run(env, reference):
    out = env["root"] / "killed"
    proc = _start(env, out)
    _wait_for_lines(out, proc)
    proc.kill()
    proc.communicate()
    parts = out / "parts" / "rank0.jsonl"
    done = parts.read_text().count("\n")
    assert 1 <= done < NUM_SCENES and not (out / "results.json").exists()
    with open(parts, "a") as f:  # a line torn by the kill
        f.write('{"v": 1, "type": "scene", "inp')
    assert predict(env, "--input", str(env["scenes"]), "--output", str(out), "--no-vis", "--resume") == 0
    summary = read(out / "summary.json")
    assert summary["images_resumed"] == done and summary["images_done"] == NUM_SCENES
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()
    assert (out / "images.json").read_bytes() == (reference / "images.json").read_bytes()
    assert all(json.loads(line) for line in parts.read_text().splitlines())  # the torn line was cut off


def _signal_after_first_scene(out, sig):
    """Send ``sig`` to this process once the run has finished its first scene (from a helper thread)."""
    parts = out / "parts" / "rank0.jsonl"

    def wait_and_signal():
        deadline = time.time() + 240
        while time.time() < deadline:
            if parts.exists() and parts.read_text().count("\n") >= 1:
                os.kill(os.getpid(), sig)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=wait_and_signal, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_write_what_is_done(env, reference, sig, code):
    out = env["root"] / f"interrupted_{sig.name}"
    late = []
    previous = signal.signal(
        sig, lambda *a: late.append(a)
    )  # a signal arriving after the run must not kill pytest
    try:
        thread = _signal_after_first_scene(out, sig)
        result = predict(env, "--input", str(env["scenes"]), "--output", str(out), "--no-vis")
        thread.join()
    finally:
        signal.signal(sig, previous)
    assert not late and result == code
    summary = read(out / "summary.json")
    done = summary["images_done"]
    assert summary["interrupted"] and summary["exit_code"] == code and 1 <= done < NUM_SCENES
    assert len(read(out / "images.json")["images"]) == done
    ref = [r for r in read(reference / "results.json") if r["image_id"] <= done]
    assert read(out / "results.json") == ref  # the scenes done before the signal, merged
    assert predict(env, "--input", str(env["scenes"]), "--output", str(out), "--no-vis", "--resume") == 0
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()


def test_visualize_and_evaluate_follow_the_same_policy(env, reference, capsys):
    vis = load_tool("visualize")
    out = env["root"] / "pictures"
    args = [
        "--config-file",
        str(QUICK),
        "--weights",
        env["base"][3],
        "--output",
        str(out),
        "--pictures",
        "boxes",
    ]
    bad = env["root"] / "vis_inputs"
    write_image(bad / "good.png", make_synthetic_scene(128, 128, seed=3).image)
    (bad / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert vis.main(args + ["--input", str(bad)]) == 3
    assert "torn.png" in capsys.readouterr().err and len(list(out.glob("good_*_boxes.png"))) == 1
    assert vis.main(args + ["--input", str(bad / "good.png")]) == 2  # its picture exists: refused
    assert vis.main(args + ["--input", str(bad / "good.png"), "--resume"]) == 0
    assert vis.main(args + ["--input", str(bad / "good.png"), "--overwrite"]) == 0
    assert vis.main(args + ["--input", str(bad / "torn.png"), "--overwrite"]) == 4
    a_file = env["root"] / "a_file_vis"
    a_file.write_text("x")
    assert vis.main(args[:-4] + ["--output", str(a_file), "--input", str(bad)]) == 2
    # evaluate_scenes: --out is checked first and never replaced silently.
    ev = load_tool("evaluate_scenes")
    gt = env["root"] / "gt.json"
    from sdconet.inference.synthetic_scene import scenes_ground_truth

    gt.write_text(
        json.dumps(
            scenes_ground_truth(
                [make_synthetic_scene(128, 128, seed=i) for i in range(NUM_SCENES)],
                [f"scenes/scene_{i}.png" for i in range(NUM_SCENES)],
            )
        )
    )
    report = env["root"] / "report.json"
    ev_args = ["--gt", str(gt), "--results", str(reference / "results.json"), "--out", str(report)]
    assert ev.main(ev_args) == 0 and read(report)["num_images"] == NUM_SCENES
    assert ev.main(ev_args) == 2 and "--overwrite" in capsys.readouterr().err
    assert ev.main(ev_args + ["--overwrite"]) == 0
    assert ev.main(ev_args[:-1] + [str(env["root"])]) == 2  # a folder
