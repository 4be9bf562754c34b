"""detectron2 evaluator of sdconet.d2.evaluation: same numbers as COCOEvaluator under the coco protocol, pycocotools'
numbers under mmdet, the config-time maxDets check, and the run report."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from sdconet.d2 import get_sdconet_cfg  # noqa: E402
from sdconet.d2.config import check_eval_config, model_max_detections  # noqa: E402
from sdconet.d2.evaluation import ProtocolCOCOEvaluator, write_evaluation_report  # noqa: E402
from sdconet.data.synthetic import SYNTHETIC_CLASSES, ensure_synthetic_dataset  # noqa: E402

NAME = "_test_d2_eval_synth"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalsynth")
    paths = ensure_synthetic_dataset(root, num_train=1, num_test=6, tile_size=128, max_object_size=40)
    if NAME not in DatasetCatalog.list():
        register_coco_instances(
            NAME, {"thing_classes": list(SYNTHETIC_CLASSES)}, paths["test_json"], paths["test_images"]
        )
    gt = json.loads(open(paths["test_json"]).read())
    return gt


def _predictions(gt, seed=0, jitter=0.1, extra=30):
    """detectron2-style (inputs, outputs): jittered GT boxes with random scores + background false positives."""
    rng = np.random.default_rng(seed)
    cat_to_contig = {c["id"]: i for i, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))}
    inputs, outputs = [], []
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        boxes, scores, classes = [], [], []
        for a in anns:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, jitter, 4) * [w, h, w, h]
            boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
            scores.append(rng.uniform(0.3, 1.0))
            classes.append(cat_to_contig[a["category_id"]])
        for _ in range(extra):
            x, y = rng.uniform(0, img["width"] - 10, 2)
            boxes.append([x, y, x + 8, y + 8])
            scores.append(rng.uniform(0, 0.6))
            classes.append(int(rng.integers(0, len(cat_to_contig))))
        inst = Instances((img["height"], img["width"]))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor(scores, dtype=torch.float32)
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        inputs.append({"image_id": img["id"], "height": img["height"], "width": img["width"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def _run(ev, inputs, outputs):
    ev.reset()
    ev.process(inputs, outputs)
    return ev.evaluate()


def test_coco_protocol_reproduces_detectron2_coco_evaluator(dataset, tmp_path):
    inputs, outputs = _predictions(dataset)
    for max_dets in (100, 10):
        ref = _run(COCOEvaluator(NAME, tasks=("bbox",), max_dets_per_image=max_dets), inputs, outputs)["bbox"]
        for fast in (True, False):
            ours = _run(
                ProtocolCOCOEvaluator(NAME, protocol="coco", max_dets=max_dets, use_fast_impl=fast),
                inputs,
                outputs,
            )["bbox"]
            for k, v in ref.items():  # AP, AP50, AP75, APs, APm, APl and AP-<class>
                assert ours[k] == pytest.approx(v, abs=1e-9, nan_ok=True), (max_dets, fast, k)


def test_mmdet_protocol_equals_pycocotools_summarize(dataset, tmp_path):
    inputs, outputs = _predictions(dataset, seed=1)
    ev = ProtocolCOCOEvaluator(NAME, protocol="mmdet", output_dir=str(tmp_path), model_max_dets=300)
    res = _run(ev, inputs, outputs)["bbox"]
    dets = json.loads((tmp_path / "coco_instances_results.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(dataset))
        for a in coco_gt.dataset["annotations"]:
            a["area"] = a["bbox"][2] * a["bbox"][3]
        coco_gt.createIndex()
        e = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        e.params.maxDets = [100, 300, 1000]
        e.evaluate()
        e.accumulate()
        e.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR@100", "AR@300", "AR@1000", "ARs", "ARm", "ARl"]
    for k, s in zip(names, e.stats):
        assert res[k] == pytest.approx(100 * s if s >= 0 else float("nan"), abs=1e-9, nan_ok=True), k
    assert "1000" in ev.note and "300" in ev.note  # maxDets 1000 scores the 300 kept detections
    assert res["nGT"] == len(dataset["annotations"]) == sum(res[f"nGT-{c}"] for c in SYNTHETIC_CLASSES)
    assert ev.last_report["metric_max_dets"]["AP"] == 100


def test_aitod_buckets_in_the_lr_frame(dataset):
    inputs, outputs = _predictions(dataset, seed=2)
    hr = _run(ProtocolCOCOEvaluator(NAME, area_ranges="aitod"), inputs, outputs)["bbox"]
    lr = _run(ProtocolCOCOEvaluator(NAME, area_ranges="aitod", frame="lr", frame_scale=2.0), inputs, outputs)
    lr = lr["bbox"]
    sides = [np.sqrt(a["bbox"][2] * a["bbox"][3]) for a in dataset["annotations"]]
    for frame, res, f in (("hr", hr, 1.0), ("lr", lr, 2.0)):
        s = np.asarray(sides) / f
        expect = {"vt": (s <= 8).sum(), "t": ((s >= 8) & (s <= 16)).sum(), "s": ((s >= 16) & (s <= 32)).sum()}
        expect["m"] = (s >= 32).sum()
        assert {k: res[f"nGT{k}"] for k in expect} == expect, frame
    assert lr["nGTvt"] > hr["nGTvt"] and hr["AP"] == lr["AP"]  # only the buckets move


def _cfg(*opts):
    cfg = get_sdconet_cfg()
    cfg.merge_from_list(["MODEL.SDCONET.NUM_CLASSES", "3", *opts])
    return cfg


def test_config_time_max_dets_check_names_both_keys():
    check_eval_config(_cfg())  # defaults: 100 <= 300
    with pytest.raises(ValueError, match=r"TEST.COCO_MAX_DETS \(500\).*TEST.DETECTIONS_PER_IMAGE \(300\)"):
        check_eval_config(_cfg("TEST.COCO_MAX_DETS", "500"))
    # the top-k runs over queries x classes: 20 queries x 3 classes = 60 < 100
    cfg = _cfg("MODEL.SDCONET.NUM_QUERIES", "20")
    assert model_max_detections(cfg) == 60
    with pytest.raises(ValueError, match=r"TEST.COCO_MAX_DETS.*capped at 60 = MODEL.SDCONET.NUM_QUERIES"):
        check_eval_config(cfg)
    with pytest.raises(ValueError, match=r"TEST.COCO_PROTOCOL mmdet.*TEST.DETECTIONS_PER_IMAGE \(50\)"):
        check_eval_config(_cfg("TEST.COCO_PROTOCOL", "mmdet", "TEST.DETECTIONS_PER_IMAGE", "50"))
    check_eval_config(_cfg("TEST.COCO_PROTOCOL", "mmdet"))  # 1000 > 300 is fine: it scores all 300
    for key, bad in (("TEST.COCO_PROTOCOL", "voc"), ("TEST.AREA_RANGES", "tiny"), ("TEST.AREA_FRAME", "sr")):
        with pytest.raises(ValueError, match=key):
            check_eval_config(_cfg(key, bad))


def test_report_files_after_an_evaluation(dataset, tmp_path):
    inputs, outputs = _predictions(dataset, seed=3)
    ev = ProtocolCOCOEvaluator(NAME, protocol="mmdet", area_ranges="aitod", model_max_dets=300)
    res = _run(ev, inputs, outputs)
    cfg = _cfg("OUTPUT_DIR", str(tmp_path))
    md = write_evaluation_report(cfg, {NAME: ev}, {NAME: res}, iteration=7)
    text = open(md).read()
    assert "protocol **mmdet**" in text and "| maxDets | 100 | 1000 |" in text and "iteration 7" in text
    assert "very tiny (APvt)" in text and f"{res['bbox']['AP']:.1f}" in text
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["datasets"][NAME]["coco"]["metrics"]["AP"] == pytest.approx(res["bbox"]["AP"])
    for png in data["datasets"][NAME]["images"]:
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
