"""detectron2's own detectors on the LR splits (configs/baselines) and the SR branch as an add-on to any detector."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("detectron2")

from detectron2 import model_zoo  # noqa: E402
from detectron2.config import CfgNode  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402
from detectron2.modeling import GeneralizedRCNN  # noqa: E402
from detectron2.structures import Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from sdconet.d2 import (  # noqa: E402
    SDCoNet,
    SDCoNetDatasetMapper,
    SDCoNetTrainer,
    SRStageHook,
    build_model,
    load_cfg,
    recipe_for,
    resolve_cfg,
    setup_cfg,
    stock_state_dict,
)
from sdconet.d2.benchmark import BASELINES as BENCH_BASELINES  # noqa: E402
from sdconet.d2.benchmark import BaselineOutputs  # noqa: E402
from sdconet.d2.sr_branch import SRAugmented  # noqa: E402
from sdconet.d2.swin_backbone import SwinBackbone  # noqa: E402
from sdconet.data.synthetic import SYNTHETIC_CLASSES, ensure_synthetic_dataset  # noqa: E402
from sdconet.evaluation.complexity import module_flops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "projects" / "SDCoNet" / "configs"
BASELINES = CONFIGS / "baselines"
ALL = sorted(p.name for p in BASELINES.glob("*_x2_*.yaml"))
TRAIN, TEST = "_test_bl_synth_train", "_test_bl_synth_test"

# Reduced sizes: ResNet-18 with trainable BN (random init), a 1-block Swin, a small SR decoder and ROI sampling.
R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", "BN",
       "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.SR_BRANCH.DECODER_CHANNELS", "[16, 32, 32, 64]",
       "MODEL.SR_BRANCH.PROJECTION_GROUPS", "8"]  # fmt: skip
SWIN = ["MODEL.SWIN.EMBED_DIM", "24", "MODEL.SWIN.DEPTHS", "[1, 1, 1, 1]", "MODEL.SWIN.NUM_HEADS", "[1, 2, 2, 4]",
        "MODEL.SWIN.DROP_PATH_RATE", "0.0", "MODEL.SWIN.IMG_SIZE", "[32, 32]",
        "MODEL.SR_BRANCH.DECODER_CHANNELS", "[24, 48, 96, 192]"]  # fmt: skip
SMALL = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.ROI_BOX_HEAD.FC_DIM",
         "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
         "MODEL.SDCONET.SR.BOTTLENECK_CHANNELS", "64", "MODEL.SDCONET.SR.DEPTHS", "[1, 1, 1, 1]",
         "MODEL.SDCONET.SR.NUM_HEADS", "[1, 1, 1, 1]", "MODEL.SDCONET.SR.WINDOW_SIZE", "4",
         "MODEL.SDCONET.SR.DROP_PATH_RATE", "0.0", "MODEL.WEIGHTS", "", "MODEL.SWIN.PRETRAINED", "",
         "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "SEED", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_bl")
    paths = ensure_synthetic_dataset(root, num_train=2, num_test=2, tile_size=64, max_object_size=28)
    for name, split in ((TRAIN, "train"), (TEST, "test")):
        if name not in DatasetCatalog.list():
            meta = {"thing_classes": list(SYNTHETIC_CLASSES)}
            register_coco_instances(name, meta, paths[f"{split}_json"], paths[f"{split}_images"])
    return paths


def _opts(config_name, out_dir, *extra):
    sizes = SWIN if "swinT" in config_name else R18
    data = ["DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", f"('{TEST}',)", "OUTPUT_DIR", str(out_dir)]
    return [*sizes, *SMALL, *data, *extra]


def _cfg(config_name, out_dir, *extra, count_images=True):
    return setup_cfg(
        str(BASELINES / config_name), _opts(config_name, out_dir, *extra), count_images=count_images
    )


# --------------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ALL)
def test_every_config_loads_with_its_detectors_recipe(name, tmp_path):
    """No data: the recipe is detectron2's (or the Swin recipe), pixel format follows the backbone, classes 0."""
    path = str(BASELINES / name)
    assert recipe_for(path) == "detectron2"
    cfg = load_cfg(path)
    assert cfg.MODEL.META_ARCHITECTURE in ("GeneralizedRCNN", "RetinaNet")
    assert set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST) <= set(DatasetCatalog.list())
    assert (
        cfg.SOLVER.MAX_EPOCHS == 52
        and list(cfg.SOLVER.STEPS_EPOCHS) == [27]
        and cfg.SOLVER.IMS_PER_BATCH == 2
    )
    assert (
        cfg.INPUT.LR_MODE == "degrade" and cfg.SOLVER.BASE_LR_BATCH == 16 and cfg.SOLVER.WARMUP_ITERS == 1000
    )
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 0 and cfg.MODEL.RETINANET.NUM_CLASSES == 0
    assert not cfg.SOLVER.CLIP_GRADIENTS.ENABLED
    if "swinT" in name:
        assert (cfg.INPUT.FORMAT, cfg.SOLVER.OPTIMIZER, cfg.MODEL.WEIGHTS) == ("RGB", "ADAMW", "")
        assert cfg.MODEL.PIXEL_STD == [58.395, 57.12, 57.375] and cfg.MODEL.SWIN.PRETRAINED
        assert cfg.MODEL.SWIN.IMG_SIZE == ([256, 256] if "nwpu" in name else [512, 512])
    else:
        assert (cfg.INPUT.FORMAT, cfg.SOLVER.OPTIMIZER, cfg.SOLVER.MOMENTUM) == ("BGR", "SGD", 0.9)
        assert cfg.MODEL.PIXEL_STD == [1.0, 1.0, 1.0] and cfg.MODEL.WEIGHTS.startswith(
            "detectron2://ImageNet"
        )
    assert cfg.MODEL.SR_BRANCH.ENABLED == ("_sr_" in name)
    assert min(min(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES) == 8  # LR anchors
    # builds (reduced sizes), with the class count of its dataset resolved from the registered class list
    small = load_cfg(path, [*(SWIN if "swinT" in name else R18), *SMALL])
    resolve_cfg(small, count_images=False)
    classes = len(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).thing_classes)
    assert classes in (10, 13, 16)
    assert small.MODEL.ROI_HEADS.NUM_CLASSES == small.MODEL.RETINANET.NUM_CLASSES == classes
    model = build_model(small)
    assert isinstance(model, SRAugmented) == ("_sr_" in name)
    if hasattr(model, "head"):  # RetinaNet: 9 anchors x classes logits
        assert model.head.cls_score.out_channels == 9 * classes
    else:  # R-CNN (Cascade: one predictor per stage): classes + background
        predictors = model.roi_heads.box_predictor
        predictors = predictors if isinstance(predictors, torch.nn.ModuleList) else [predictors]
        assert all(p.cls_score.out_features == classes + 1 for p in predictors)


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


#: What the base files change from detectron2's model-zoo file on purpose (each is commented in the yaml).
DELIBERATE = (
    "MODEL.ANCHOR_GENERATOR.SIZES",  # LR anchors
    "MODEL.MASK_ON",  # box-only Cascade
    "MODEL.ROI_MASK_HEAD.",  # box-only
    "SOLVER.BASE_LR_BATCH", "SOLVER.IMS_PER_BATCH", "SOLVER.MAX_EPOCHS", "SOLVER.STEPS_EPOCHS",  # paper protocol
    "INPUT.MIN_SIZE_TRAIN",  # the mapper never resizes
    "DATALOADER.NUM_WORKERS", "DATASETS.",
)  # fmt: skip
ZOO = {
    "Base-RCNN-FPN-LR.yaml": "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
    "Base-RetinaNet-LR.yaml": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "Base-Cascade-RCNN-FPN-LR.yaml": "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml",
}


@pytest.mark.parametrize("base", sorted(ZOO))
def test_base_files_keep_detectron2s_values(base):
    """Every value the installed model zoo's file sets is ours too, except the deliberate (commented) changes,
    and every value we set beyond it is detectron2's default or a deliberate change."""
    zoo_file = model_zoo.get_config_file(ZOO[base])
    ours = load_cfg(str(BASELINES / base))
    zoo = load_cfg(zoo_file)  # same recipe defaults + the zoo file
    assert recipe_for(zoo_file) == "detectron2"
    zoo_keys = dict(_leaves(CfgNode.load_yaml_with_base(zoo_file, allow_unsafe=True)))
    ours_flat, zoo_flat = dict(_leaves(ours)), dict(_leaves(zoo))
    differ = sorted(k for k in ours_flat if ours_flat[k] != zoo_flat[k] and not k.startswith(DELIBERATE))
    # the zoo's iteration schedule and COCO LR are replaced by the epoch recipe and the scaled LR: expected
    assert set(differ) <= {"SOLVER.MAX_ITER", "SOLVER.STEPS"}, differ
    assert ours.SOLVER.BASE_LR == zoo.SOLVER.BASE_LR  # 0.02 / 0.01 at batch 16 before scaling
    assert all(k in ours_flat for k in zoo_keys if not k.startswith(DELIBERATE))
    zoo_sizes = torch.tensor(zoo.MODEL.ANCHOR_GENERATOR.SIZES)
    assert torch.allclose(torch.tensor(ours.MODEL.ANCHOR_GENERATOR.SIZES) * 4, zoo_sizes, rtol=1e-4)


def test_classes_lr_scaling_and_sdconet_recipe_unchanged(synth, tmp_path):
    cfg = _cfg("faster_rcnn_R50_FPN_x2_nwpu.yaml", tmp_path)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3 and cfg.MODEL.RETINANET.NUM_CLASSES == 3
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.02 * 2 / 16) and cfg.SOLVER.BASE_LR_BATCH == 0
    # the resolved config is final: reading it back does not scale again
    (tmp_path / "resolved.yaml").write_text(cfg.dump())
    assert load_cfg(str(tmp_path / "resolved.yaml")).SOLVER.BASE_LR == pytest.approx(0.0025)
    quick = setup_cfg(str(CONFIGS / "quick_synthetic.yaml"), ["DATASETS.TRAIN", f"('{TRAIN}',)"])
    assert (quick.SOLVER.OPTIMIZER, quick.INPUT.FORMAT, quick.SOLVER.CLIP_GRADIENTS.CLIP_TYPE) == (
        "ADAMW", "RGB", "full_model")  # fmt: skip
    assert quick.SOLVER.WARMUP_ITERS == 0 and quick.SOLVER.BASE_LR == 0.002
    demo = setup_cfg(str(BASELINES / "faster_rcnn_R18_FPN_quick_synthetic.yaml"), count_images=False)
    assert (demo.MODEL.ROI_HEADS.NUM_CLASSES, demo.SOLVER.BASE_LR, demo.SOLVER.OPTIMIZER) == (3, 0.02, "SGD")


# ------------------------------------------------------------------------------------- training + evaluation
NWPU = [n for n in ALL if n.endswith("_nwpu.yaml")]


@pytest.mark.parametrize("name", NWPU)
def test_two_iterations_across_the_stage_switch_then_evaluation(name, synth, tmp_path):
    """Reduced sizes: 1 iteration per epoch, SR branch from epoch 1 -> iteration 0 stage 1, iteration 1 stage 2."""
    extra = ["SOLVER.MAX_EPOCHS", "2", "SOLVER.STEPS_EPOCHS", "[]", "SOLVER.SR_START_EPOCH", "1",
             "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False", "TEST.SR_EVAL.ENABLED", "True",
             # random init scores below the default thresholds; keep every detection so the AP tables fill
             "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]  # fmt: skip
    cfg = _cfg(name, tmp_path, *extra)
    assert (cfg.SOLVER.ITERS_PER_EPOCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.SR_START_ITER) == (1, 2, 1)
    trainer = SDCoNetTrainer(cfg)
    has_sr = "_sr_" in name
    assert isinstance(trainer.model, SRAugmented) == has_sr
    assert any(isinstance(h, SRStageHook) for h in trainer._hooks) == has_sr
    seen = []

    class Record(HookBase):
        def after_step(self):
            model = self.trainer.model
            seen.append((getattr(model, "sr_enabled", None), "loss_sr" in self.trainer.storage.latest()))

    trainer.register_hooks([Record()])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert seen == ([(False, False), (True, True)] if has_sr else [(None, False), (None, False)])
    results = trainer._last_eval_results
    assert "AP" in results["bbox"] and "AP-vehicle" in results["bbox"]
    assert ("sr" in results) == has_sr
    assert (tmp_path / "model_final.pth").exists()


# -------------------------------------------------------------------------------------- frames and identity
def _gt_as_detections(mapper, dicts):
    """Mapper outputs (LR frame instances) and matching 'detections' = the GT with score 1."""
    inputs, dets = [], []
    for d in dicts:
        x = mapper(d)
        inst = x["instances"]
        det = Instances(inst.image_size)
        det.pred_boxes = inst.gt_boxes
        det.scores = torch.ones(len(inst))
        det.pred_classes = inst.gt_classes
        inputs.append(x)
        dets.append(det)
    return inputs, dets


def _evaluate(cfg, inputs, outputs, out_dir):
    ev = SDCoNetTrainer.build_evaluator(cfg, TEST, str(out_dir))
    ev.reset()
    ev.process(inputs, outputs)
    return ev.evaluate()["bbox"]


def test_gt_as_detections_score_identically_for_a_stock_detector_and_sdconet(synth, tmp_path):
    """Both postprocessing paths return boxes in the HR tile frame: GT as detections gives AP 100 for both."""
    stock_cfg = _cfg("faster_rcnn_R50_FPN_x2_nwpu.yaml", tmp_path / "s", "INPUT.RANDOM_FLIP", "none",
                     count_images=False)  # fmt: skip
    sd_cfg = setup_cfg(str(CONFIGS / "quick_synthetic.yaml"), ["DATASETS.TEST", f"('{TEST}',)", "DATASETS.TRAIN",
                       f"('{TRAIN}',)", "INPUT.RANDOM_FLIP", "none"], count_images=False)  # fmt: skip
    dicts = DatasetCatalog.get(TEST)
    # stock detector: BGR mapper, GeneralizedRCNN's own postprocessing
    inputs, dets = _gt_as_detections(SDCoNetDatasetMapper(stock_cfg, is_train=True), dicts)
    sizes = [tuple(x["image"].shape[-2:]) for x in inputs]
    stock = _evaluate(stock_cfg, inputs, GeneralizedRCNN._postprocess(dets, inputs, sizes), tmp_path / "e1")
    # SDCoNet: RGB mapper, its meta-architecture's postprocessing of core outputs (boxes normalised to the LR input)
    inputs2, dets2 = _gt_as_detections(SDCoNetDatasetMapper(sd_cfg, is_train=True), dicts)
    core_out = [
        {
            "boxes": d.pred_boxes.tensor / torch.tensor([w, h, w, h]),
            "scores": d.scores,
            "labels": d.pred_classes,
        }
        for d, (h, w) in zip(dets2, sizes)
    ]
    sd_model = SDCoNetTrainer.build_model(sd_cfg).eval()
    assert isinstance(sd_model, SDCoNet)
    sd_model.sr_eval = False
    ours = _evaluate(sd_cfg, inputs2, sd_model.postprocess(core_out, inputs2, sizes), tmp_path / "e2")
    assert stock["AP"] == pytest.approx(100.0) and stock["AP50"] == pytest.approx(100.0)
    assert {k: v for k, v in stock.items() if v == v} == pytest.approx(
        {k: v for k, v in ours.items() if v == v}
    )
    # the frame matters: left in the LR frame (no height/width), the same detections score far lower
    lr_inputs = [{k: v for k, v in x.items() if k not in ("height", "width")} for x in inputs]
    wrong = GeneralizedRCNN._postprocess(dets, lr_inputs, sizes)
    assert _evaluate(stock_cfg, inputs, wrong, tmp_path / "e3")["AP"] < 50


def test_mapper_pixel_format_follows_the_backbone(synth, tmp_path):
    rgb_cfg = _cfg(
        "faster_rcnn_swinT_FPN_x2_nwpu.yaml", tmp_path, "INPUT.RANDOM_FLIP", "none", count_images=False
    )
    bgr_cfg = _cfg(
        "faster_rcnn_R50_FPN_x2_nwpu.yaml", tmp_path, "INPUT.RANDOM_FLIP", "none", count_images=False
    )
    sr_cfg = _cfg("cascade_rcnn_R50_FPN_sr_x2_nwpu.yaml", tmp_path, "INPUT.RANDOM_FLIP", "none",
                  count_images=False)  # fmt: skip
    d = DatasetCatalog.get(TRAIN)[0]
    rgb = SDCoNetDatasetMapper(rgb_cfg, is_train=True)(d)
    bgr = SDCoNetDatasetMapper(bgr_cfg, is_train=True)(d)
    sr = SDCoNetDatasetMapper(sr_cfg, is_train=True)(d)
    assert torch.equal(rgb["image"], bgr["image"].flip(0))
    assert torch.equal(rgb["instances"].gt_boxes.tensor, bgr["instances"].gt_boxes.tensor)
    assert "hr_image" not in rgb and "hr_image" not in bgr  # stock detectors get no HR tile
    assert torch.equal(sr["image"], bgr["image"])  # the SR configs emit the HR tile too, in the same format
    assert sr["hr_image"].shape[-2:] == tuple(2 * s for s in sr["image"].shape[-2:])
    assert torch.equal(
        SDCoNetDatasetMapper(rgb_cfg, is_train=True, keep_hr=True)(d)["hr_image"], sr["hr_image"].flip(0)
    )


def _images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8), "height": 2 * size,
         "width": 2 * size}
        for _ in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "name, extra",
    [
        ("cascade_rcnn_R50_FPN_sr_x2_nwpu.yaml", []),
        ("cascade_rcnn_swinT_FPN_sr_x2_nwpu.yaml", []),
        # any meta-architecture: RetinaNet gains the branch by config (res2 + stem added to its ResNet outputs)
        ("retinanet_R50_FPN_x2_nwpu.yaml", ["MODEL.SR_BRANCH.ENABLED", "True", "MODEL.RESNETS.OUT_FEATURES",
                                            "['stem', 'res2', 'res3', 'res4', 'res5']"]),
    ],
)  # fmt: skip
def test_sr_augmented_detector_is_the_stock_detector_at_inference(name, extra, synth, tmp_path):
    cfg = _cfg(name, tmp_path, *extra, count_images=False)
    torch.manual_seed(0)
    sr_model = build_model(cfg).eval()
    assert isinstance(sr_model, SRAugmented) and type(sr_model).__name__.endswith("WithSR")
    stock_cfg = cfg.clone()
    stock_cfg.defrost()
    stock_cfg.MODEL.SR_BRANCH.ENABLED = False
    stock = build_model(stock_cfg).eval()
    assert not isinstance(stock, SRAugmented)
    # the SR keys are exactly the sr_branch.* ones and the stock detector needs none of them
    sr_keys = set(sr_model.state_dict()) - set(stock.state_dict())
    assert sr_keys and all(k.startswith("sr_branch.") for k in sr_keys)
    assert set(stock_state_dict(sr_model)) == set(stock.state_dict())
    stock.load_state_dict(stock_state_dict(sr_model), strict=True)
    with torch.no_grad():
        a, b = sr_model(_images()), stock(_images())
    for x, y in zip(a, b):
        assert set(x) == set(y) == {"instances"}  # no SR image at inference
        for field in ("pred_boxes", "scores", "pred_classes"):
            va, vb = x["instances"].get(field), y["instances"].get(field)
            va, vb = getattr(va, "tensor", va), getattr(vb, "tensor", vb)
            assert torch.equal(va, vb), field
    img = _images(1)[0]["image"].float()[None]
    flops_sr = module_flops(BaselineOutputs(sr_model), (img,)).gflops
    flops_stock = module_flops(BaselineOutputs(stock), (img,)).gflops
    assert flops_sr == flops_stock > 0
    sr_model.sr_eval = True  # the counter does see the branch when it runs
    assert module_flops(BaselineOutputs(sr_model), (img,)).gflops > flops_stock


def test_sr_branch_losses_and_gradients_follow_the_stage(synth, tmp_path):
    cfg = _cfg(
        "cascade_rcnn_R50_FPN_sr_x2_nwpu.yaml", tmp_path, "INPUT.RANDOM_FLIP", "none", count_images=False
    )
    model = build_model(cfg).train()
    batch = [SDCoNetDatasetMapper(cfg, is_train=True)(d) for d in DatasetCatalog.get(TRAIN)]
    for enabled in (False, True):
        model.zero_grad(set_to_none=True)
        model.set_sr_enabled(enabled)
        with EventStorage():  # detectron2's R-CNN training logs into the current storage
            losses = model(batch)
        assert ("loss_sr" in losses) == enabled
        sum(losses.values()).backward()
        sr_grads = [p.grad for p in model.sr_branch.parameters()]
        assert all((g is not None) == enabled for g in sr_grads)
    assert torch.isfinite(losses["loss_sr"]) and 0 < model.last_stats["sr_psnr"] < 60
    # the L1 lives in the ImageNet-normalised space (as SDCoNet's), not in the BGR std-1 space of the detector
    assert losses["loss_sr"] < 5.0 * 10
    assert model.sr_pixel_std.flatten().tolist() == pytest.approx([57.375, 57.12, 58.395])  # BGR order
    assert model.backbone.bottom_up.res5[0].conv1.weight.grad is not None


def test_swin_backbone_loads_the_projects_weights(synth, tmp_path):
    cfg = _cfg("faster_rcnn_swinT_FPN_x2_nwpu.yaml", tmp_path, count_images=False)
    donor = build_model(cfg).backbone.bottom_up
    assert isinstance(donor, SwinBackbone)
    state = {k: v + 0.25 for k, v in donor.encoder.state_dict().items() if not k.startswith("out_norms.")}
    torch.save({"model": state}, tmp_path / "swin.pth")
    cfg2 = _cfg("faster_rcnn_swinT_FPN_x2_nwpu.yaml", tmp_path, "MODEL.SWIN.PRETRAINED", str(tmp_path / "swin.pth"),
                count_images=False)  # fmt: skip
    enc = build_model(cfg2).backbone.bottom_up.encoder.state_dict()
    assert all(torch.equal(enc[k], v) for k, v in state.items())
    bad = _cfg("faster_rcnn_swinT_FPN_x2_nwpu.yaml", tmp_path, "INPUT.FORMAT", "BGR", count_images=False)
    with pytest.raises(ValueError, match="INPUT.FORMAT must be 'RGB'"):
        build_model(bad)


def test_optimizer_groups_of_a_stock_detector(synth, tmp_path):
    cfg = _cfg("cascade_rcnn_R50_FPN_sr_x2_nwpu.yaml", tmp_path, "SOLVER.BACKBONE_MULTIPLIER", "0.5",
               count_images=False)  # fmt: skip
    model = build_model(cfg)
    opt = SDCoNetTrainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    groups = {g["name"]: g for g in opt.param_groups}
    ids = {n: {id(p) for p in g["params"]} for n, g in groups.items()}
    named = dict(model.named_parameters())
    assert id(named["backbone.bottom_up.res5.0.conv1.weight"]) in ids["encoder"]
    assert id(named["backbone.fpn_lateral2.weight"]) in ids["detection"]
    assert all(
        id(p) in ids["sr"] | ids["sr_no_decay"] for n, p in named.items() if n.startswith("sr_branch.")
    )
    base = cfg.SOLVER.BASE_LR
    assert groups["encoder"]["lr"] == pytest.approx(0.5 * base) and groups["sr"]["lr"] == pytest.approx(
        0.5 * base
    )
    assert (
        groups["detection"]["lr"] == pytest.approx(base) and groups["encoder_no_decay"]["weight_decay"] == 0
    )
    assert MetadataCatalog.get(TRAIN).thing_classes == list(SYNTHETIC_CLASSES)


def test_benchmark_tool_measures_baselines_beside_sdconet(tmp_path):
    """tools/benchmark.py builds the stock detectors through sdconet.d2 and times them in the same rounds."""
    spec = importlib.util.spec_from_file_location(
        "sdconet_benchmark_tool_bl", ROOT / "tools" / "benchmark.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert set(BENCH_BASELINES) <= set(tool.d2_baselines())
    out = tmp_path / "bench.json"
    tool.main(
        ["--tiny", "--device", "cpu", "--variants", "dino", "--baselines", "retinanet-r50", "--sizes",
         "64", "--dtypes", "fp32", "--quick", "--runs", "2", "--tp-runs", "0", "--no-peer", "--out", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    flops = {r["variant"]: r for r in report["flops"]}
    assert set(flops) == {"dino", "retinanet-r50"}
    assert all(r["gflops"] > 0 and r["params_total"] > 1e6 for r in flops.values()), flops
    speed = {r["variant"]: r for r in report["speed"]}
    assert set(speed) == set(flops) and all(r["error"] is None for r in speed.values())
    assert speed["retinanet-r50"]["kind"] == "detectron2" and speed["dino"]["kind"] == "sdconet"
    assert speed["retinanet-r50"]["latency_b1"]["runs"] == 2 and speed["retinanet-r50"]["images_per_s_b1"] > 0
