"""End-to-end detectron2 integration with the real (tiny) core: forward contracts, stage switch, resume, eval."""

import json
import logging
from pathlib import Path

import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from sdconet.d2 import SDCoNetTrainer, core_of, setup_cfg  # noqa: E402
from sdconet.data.synthetic import SYNTHETIC_CLASSES, ensure_synthetic_dataset  # noqa: E402

QUICK = Path(__file__).resolve().parents[1] / "projects" / "SDCoNet" / "configs" / "quick_synthetic.yaml"
TRAIN, TEST = "_test_d2_synth_train", "_test_d2_synth_test"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    paths = ensure_synthetic_dataset(root, num_train=2, num_test=2, tile_size=64, max_object_size=28)
    for name, split in ((TRAIN, "train"), (TEST, "test")):
        if name not in DatasetCatalog.list():
            meta = {"thing_classes": list(SYNTHETIC_CLASSES)}
            register_coco_instances(name, meta, paths[f"{split}_json"], paths[f"{split}_images"])
    return paths


def _cfg(out_dir, *extra):
    opts = [
        "DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", f"('{TEST}',)",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_EPOCHS", "3", "SOLVER.STEPS_EPOCHS", "[2]",
        "SOLVER.SR_START_EPOCH", "1", "SOLVER.CHECKPOINT_PERIOD_EPOCHS", "1", "OUTPUT_DIR", str(out_dir),
        "SEED", "0", "MODEL.DEVICE", "cpu",
        *extra,
    ]  # fmt: skip
    return setup_cfg(str(QUICK), opts)


def _inst(h, w, boxes, classes):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def _batch(with_objects):
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(2):
        img = torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)
        hr = torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
        boxes, classes = (
            ([[4.0, 5.0, 12.0, 15.0], [20.0, 2.0, 30.0, 9.0]], [0, 2])
            if with_objects and i == 0
            else ([], [])
        )
        out.append({"image": img, "hr_image": hr, "instances": _inst(32, 32, boxes, classes)})
    return out


def test_resolved_schedule(synth, tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.MODEL.SDCONET.NUM_CLASSES == 3  # from thing_classes
    s = cfg.SOLVER
    assert (s.ITERS_PER_EPOCH, s.MAX_ITER, tuple(s.STEPS), s.SR_START_ITER) == (1, 3, (2,), 1)
    assert s.CHECKPOINT_PERIOD == 1 and cfg.TEST.EVAL_PERIOD == 0


def test_budget_epochs_scales_the_stage_switch_and_lr_steps(synth, tmp_path):
    from sdconet.d2.schedule import sr_start_epoch

    # 2 train tiles, batch 1 -> 2 iterations/epoch; recipe 6 epochs, LR step 3, SR from 2; budget 3 = x0.5
    cfg = _cfg(tmp_path, "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_EPOCHS", "6", "SOLVER.STEPS_EPOCHS", "[3]",
               "SOLVER.SR_START_EPOCH", "2", "SOLVER.BUDGET_EPOCHS", "3")  # fmt: skip
    s = cfg.SOLVER
    assert (s.ITERS_PER_EPOCH, s.MAX_ITER, tuple(s.STEPS), s.SR_START_ITER) == (2, 6, (3,), 2)
    assert sr_start_epoch(cfg) == 1.0 and s.MAX_EPOCHS == 6  # the recipe keys stay as written
    trainer = SDCoNetTrainer(cfg)
    stage_hook = trainer._hooks[0]
    assert stage_hook.policy.sr_start_iter(s.ITERS_PER_EPOCH) == s.SR_START_ITER == 2


def test_train_loss_keys_identical_with_and_without_objects(synth, tmp_path):
    model = SDCoNetTrainer.build_model(_cfg(tmp_path)).train()
    for sr in (False, True):
        model.core.set_sr_enabled(sr)
        keys_obj = set(model(_batch(True)))
        keys_empty = set(model(_batch(False)))
        assert keys_obj == keys_empty
        assert ("loss_sr" in keys_obj) == sr
        assert all(k.startswith("loss_") for k in keys_obj)


def test_eval_padded_batch_in_the_requested_frame(synth, tmp_path):
    model = SDCoNetTrainer.build_model(_cfg(tmp_path)).eval()
    inputs = [
        {"image": torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8), "height": 64, "width": 80},
        {"image": torch.randint(0, 256, (3, 48, 24), dtype=torch.uint8), "height": 96, "width": 48},
    ]
    with torch.no_grad():
        out = model(inputs)
    for o, (h, w) in zip(out, ((64, 80), (96, 48))):
        inst = o["instances"]
        assert inst.image_size == (h, w)
        b = inst.pred_boxes.tensor
        assert 0 < len(inst) <= 100
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert inst.pred_classes.dtype == torch.int64 and inst.pred_classes.max() < 3
        assert tuple(o["sr_image"].shape) == (3, h, w)  # TEST.SR_EVAL.ENABLED in the quick config


class _Crash(HookBase):
    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt("simulated stop")


class _Record(HookBase):
    def __init__(self):
        self.sr, self.lr, self.sr_changed = [], [], []

    def before_train(self):
        self.sr0 = [p.detach().clone() for p in core_of(self.trainer.model).sr_decoder.parameters()]

    def before_step(self):
        self.sr.append(core_of(self.trainer.model).sr_enabled)
        self.lr.append(max(g["lr"] for g in self.trainer.optimizer.param_groups))

    def after_step(self):
        now = list(core_of(self.trainer.model).sr_decoder.parameters())
        self.sr_changed.append(any(not torch.equal(a, b) for a, b in zip(self.sr0, now)))


def test_train_stop_resume_and_eval_only_reproduces(synth, tmp_path):
    cfg = _cfg(tmp_path)
    trainer = SDCoNetTrainer(cfg)
    rec = _Record()
    trainer.register_hooks([rec, _Crash(at=2)])
    trainer.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    # 1 iteration per epoch: stage 1 at iteration 0, stage 2 from 1; SR weights bit-identical while SR is off
    assert rec.sr == [False, True, True]  # before_step of iterations 0..2 (stopped at 2)
    assert rec.sr_changed == [False, True]
    assert (tmp_path / "model_0000001.pth").exists() and not (tmp_path / "model_final.pth").exists()

    # a better "best" from before the interruption survives the resume (BestCheckpointer state restored)
    # (the interruption in the last iteration ran detectron2's after-train evaluation: model_best.pth exists, but
    # last_checkpoint still names the periodic checkpoint)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    best_state = {"metric": "bbox/AP", "value": 1000.0, "iteration": 1}
    (tmp_path / "model_best.json").write_text(json.dumps(best_state))
    (tmp_path / "model_best.pth").unlink(missing_ok=True)
    resumed = SDCoNetTrainer(cfg)
    rec2 = _Record()
    resumed.register_hooks([rec2])
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    assert json.loads((tmp_path / "model_best.json").read_text()) == best_state
    assert not (tmp_path / "model_best.pth").exists()
    report = (tmp_path / "report.md").read_text()
    assert "iteration 3 of 3" in report and "| maxDets | 100 |" in report and "Error breakdown" in report
    assert "model_best.pth: iteration 1" in report and "test split" in report
    results = resumed._last_eval_results  # DefaultTrainer.train returns them only with EXPECTED_RESULTS
    assert rec2.sr == [True]  # iteration 2 in stage 2 straight away
    assert rec2.lr == pytest.approx([cfg.SOLVER.BASE_LR * 0.1])  # LR schedule restored: x0.1 from iteration 2
    assert (
        set(results) == {"bbox", "bbox_errors", "sr"}
        and "AP-plane" in results["bbox"]
        and results["sr"]["num_images"] == 2
    )

    model = SDCoNetTrainer.build_model(cfg)
    DetectionCheckpointer(model).resume_or_load(str(tmp_path / "model_final.pth"), resume=False)
    again = SDCoNetTrainer.test(cfg, model)
    for task in ("bbox", "bbox_errors", "sr"):
        for k, v in results[task].items():
            assert again[task][k] == pytest.approx(v, nan_ok=True), (task, k)


def test_pretrained_swin_weights_are_loaded_into_the_encoder(synth, tmp_path):
    cfg = _cfg(tmp_path)
    donor = SDCoNetTrainer.build_model(cfg).core.encoder
    state = {k: v + 0.5 for k, v in donor.state_dict().items() if not k.startswith("out_norms.")}
    torch.save({"model": state}, tmp_path / "swin.pth")
    cfg2 = _cfg(tmp_path, "MODEL.SWIN.PRETRAINED", str(tmp_path / "swin.pth"))
    enc = SDCoNetTrainer.build_model(cfg2).core.encoder.state_dict()
    assert all(torch.equal(enc[k], v) for k, v in state.items())


def test_serial_trains_sr_from_the_first_step_and_best_checkpoint_is_kept(synth, tmp_path):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    schedule_logger = logging.getLogger("sdconet.d2.schedule")
    schedule_logger.addHandler(handler)
    try:
        cfg = _cfg(
            tmp_path,
            "MODEL.SDCONET.VARIANT",
            "serial",
            "SOLVER.MAX_EPOCHS",
            "2",
            "SOLVER.STEPS_EPOCHS",
            "[1]",
        )
    finally:
        schedule_logger.removeHandler(handler)
    # SR_START_EPOCH 1 (from _cfg) is overridden, and the log says so
    assert cfg.SOLVER.SR_START_EPOCH == 0 and cfg.SOLVER.SR_START_ITER == 0
    assert any("SOLVER.SR_START_EPOCH 1 overridden to 0" in r.getMessage() for r in records)
    trainer = SDCoNetTrainer(cfg)
    rec = _Record()
    trainer.register_hooks([rec])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert rec.sr == [True, True] and rec.sr_changed == [True, True]  # the SR path trains from iteration 0
    best = json.loads((tmp_path / "model_best.json").read_text())
    # the evaluation after training is stored at iteration 2 (= MAX_ITER, detectron2's numbering in metrics.json)
    assert best["metric"] == "bbox/AP" and best["iteration"] == 2 and (tmp_path / "model_best.pth").exists()
    assert "model_best.pth: iteration 2" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_hr_upper_bound_mode_trains_and_scores_on_the_stored_tiles(synth, tmp_path):
    """INPUT.LR_MODE real + the dino variant (configs/hr_upper_bound): the model sees the HR tile itself and the
    evaluation scores in the same tile frame."""
    from sdconet.d2 import SDCoNetDatasetMapper

    cfg = _cfg(
        tmp_path, "MODEL.SDCONET.VARIANT", "dino", "INPUT.LR_MODE", "real", "SOLVER.MAX_EPOCHS", "1",
        "SOLVER.STEPS_EPOCHS", "[]", "MODEL.SWIN.IMG_SIZE", "[64, 64]",
    )  # fmt: skip
    d = DatasetCatalog.get(TEST)[0]
    assert tuple(SDCoNetDatasetMapper(cfg, is_train=False)(d)["image"].shape) == (3, d["height"], d["width"])
    trainer = SDCoNetTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = trainer._last_eval_results
    assert "AP" in results["bbox"] and "sr" not in results  # no SR branch: SR evaluation skipped
    assert (tmp_path / "report.md").is_file()
