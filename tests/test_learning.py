"""The training path learns: a tiny SDCoNet finds bright rectangles of two classes (AP50 by pycocotools)."""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig
from sdconet.modeling.constants import PIXEL_MEAN, PIXEL_STD

torch.set_num_threads(2)

SIZE = 64  # LR side
NUM_IMAGES = 4
STEPS = 120
SHAPES = {0: (12, 12), 1: (22, 8)}  # class -> (w, h) in LR pixels: squares and wide bars
COLOURS = {0: (255, 255, 255), 1: (255, 60, 40)}


def make_set(seed=0):
    """LR images (normalised), HR images (normalised, 2x nearest) and COCO-style ground truth."""
    rng = np.random.default_rng(seed)
    images, targets, anns, coco_images = [], [], [], []
    for i in range(NUM_IMAGES):
        img = rng.integers(20, 60, size=(SIZE, SIZE, 3)).astype(np.float32)
        boxes, labels = [], []
        slots = [(6, 6), (36, 8), (8, 38), (38, 40)]
        rng.shuffle(slots)
        for k in range(3):
            cls = int(rng.integers(0, 2))
            w, h = SHAPES[cls]
            x0, y0 = slots[k]
            x0 += int(rng.integers(0, 4))
            y0 += int(rng.integers(0, 4))
            img[y0 : y0 + h, x0 : x0 + w] = COLOURS[cls]
            boxes.append([x0, y0, w, h])
            labels.append(cls)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        coco_images.append({"id": i + 1, "width": SIZE, "height": SIZE, "file_name": f"{i}.png"})
        norm = (
            torch.from_numpy(img).permute(2, 0, 1) - torch.tensor(PIXEL_MEAN)[:, None, None]
        ) / torch.tensor(PIXEL_STD)[:, None, None]
        images.append(norm)
        b = torch.tensor(boxes, dtype=torch.float32)
        cxcywh = torch.cat([(b[:, :2] + b[:, 2:] / 2) / SIZE, b[:, 2:] / SIZE], 1)
        targets.append({"labels": torch.tensor(labels), "boxes": cxcywh})
    gt = {
        "images": coco_images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "bar"}],
    }
    lr = torch.stack(images)
    hr = lr.repeat_interleave(2, 2).repeat_interleave(2, 3)
    return lr, hr, targets, gt


def ap50(model, lr, gt):
    model.eval()
    with torch.no_grad():
        out = model(lr)
    dets = []
    for i, res in enumerate(out):
        for box, score, label in zip(res["boxes"].tolist(), res["scores"].tolist(), res["labels"].tolist()):
            x1, y1, x2, y2 = (v * SIZE for v in box)
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[1]


@pytest.mark.slow
def test_tiny_sdconet_learns_rectangles():
    torch.manual_seed(0)
    lr, hr, targets, gt = make_set()
    cfg = SDCoNetConfig.tiny(num_classes=2, num_queries=30, dn_number=10, topk_test=30)
    model = build_sdconet(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    start_ap = ap50(model, lr, gt)
    for step in range(STEPS):
        model.train()
        model.set_sr_enabled(step >= STEPS // 2)  # cross the stage switch half way
        losses = model(lr, None, targets, hr)
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    final_ap = ap50(model, lr, gt)
    assert final_ap >= 0.9, f"AP50 after {STEPS} steps: {final_ap:.3f} (start {start_ap:.3f})"
