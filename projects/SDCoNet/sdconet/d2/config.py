"""detectron2 config keys of SDCoNet and their translation into the framework-free :class:`SDCoNetConfig`.

Every key added here has a comment. Keys marked "derived" are computed by :func:`sdconet.d2.schedule.resolve_cfg`
from the epoch recipe and the training set (and recorded in the run's ``config.yaml``); do not set them by hand.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from sdconet.config_io import sdconet_config_from_dict
from sdconet.engine.routing import PAPER_SR_LR_MULTIPLIER
from sdconet.evaluation.coco_protocol import AREA_PRESETS, PROTOCOLS, make_protocol
from sdconet.modeling.config import SDCoNetConfig
from sdconet.modeling.constants import PIXEL_MEAN, PIXEL_STD

__all__ = [
    "RECIPES",
    "add_sdconet_config",
    "area_frame_scale",
    "check_eval_config",
    "config_has_sr",
    "core_config_kwargs",
    "get_sdconet_cfg",
    "load_cfg",
    "model_max_detections",
    "recipe_for",
    "sdconet_config_from_cfg",
    "setup_cfg",
]

#: Values of the stock keys: SDCoNet's own recipe, or detectron2's (baselines and any other meta-architecture).
RECIPES = ("sdconet", "detectron2")
#: SDCoNet variants that have an SR branch.
SR_VARIANTS = ("dino_sr", "sdconet", "serial")


def add_sdconet_config(cfg: CN, recipe: str = "sdconet") -> None:
    """Add the plugin's keys to a detectron2 config, in place. Must run before ``merge_from_file``.

    Args:
        cfg: a detectron2 config (``get_cfg()``).
        recipe: which values the *stock* keys get (yaml files may still override every one of them):

            * ``"sdconet"`` (default): what SDCoNet needs -- meta-architecture ``SDCoNet``, RGB input with ImageNet
              statistics, the paper's recipe (AdamW 1e-4, batch 2, no warm-up, full-model clipping at 0.1, backbone
              LR x0.1, 52 epochs), empty tiles kept.
            * ``"detectron2"``: detectron2's own values are left as they are (SGD with momentum 0.9, linear
              warm-up, no clipping, BGR with the MSRA statistics, iteration schedule, empty images filtered); the
              plugin's keys get neutral values (``SOLVER.OPTIMIZER`` "SGD", backbone multiplier 1.0, the stock heads'
              ``NUM_CLASSES`` 0 = from the training set). The baselines under ``configs/baselines`` use it, and so
              does every config whose meta-architecture is not ``SDCoNet`` (see :func:`recipe_for`).
    """
    if recipe not in RECIPES:
        raise ValueError(f"add_sdconet_config: recipe must be one of {RECIPES} (got {recipe!r})")
    _d = SDCoNetConfig()  # single source of truth for the model defaults

    # ---------------------------------------------------------------------------------------------- MODEL.SDCONET
    cfg.MODEL.SDCONET = CN()
    # Ablation variant (paper Tables VI/VIII): dino | dino_saliency | dino_sr | sdconet | serial.
    cfg.MODEL.SDCONET.VARIANT = _d.variant
    # Number of object classes; 0 = take len(thing_classes) of DATASETS.TRAIN[0] (resolved into config.yaml).
    cfg.MODEL.SDCONET.NUM_CLASSES = 0
    # Transformer width, attention heads and deformable sampling points per head/level.
    cfg.MODEL.SDCONET.HIDDEN_DIM = _d.hidden_dim
    cfg.MODEL.SDCONET.NHEADS = _d.nheads
    cfg.MODEL.SDCONET.NUM_POINTS = _d.num_points
    # Detection-transformer encoder/decoder depth, FFN width and dropout.
    cfg.MODEL.SDCONET.ENC_LAYERS = _d.enc_layers
    cfg.MODEL.SDCONET.DEC_LAYERS = _d.dec_layers
    cfg.MODEL.SDCONET.DIM_FEEDFORWARD = _d.dim_feedforward
    cfg.MODEL.SDCONET.DROPOUT = _d.dropout
    # Object queries (two-stage top-k proposals) -- 300 in the official recipe.
    cfg.MODEL.SDCONET.NUM_QUERIES = _d.num_queries
    # Contrastive denoising: query budget, label-flip ratio, box-noise scale; DN_MAX_GT caps the GT used for
    # denoising on crowded tiles (memory), 0 = no cap.
    cfg.MODEL.SDCONET.DN_NUMBER = _d.dn_number
    cfg.MODEL.SDCONET.LABEL_NOISE_RATIO = _d.label_noise_ratio
    cfg.MODEL.SDCONET.BOX_NOISE_SCALE = _d.box_noise_scale
    cfg.MODEL.SDCONET.DN_MAX_GT = _d.dn_max_gt
    # Loss weights (focal class, L1 box, GIoU) and Hungarian matcher costs.
    cfg.MODEL.SDCONET.CLASS_WEIGHT = _d.weight_class
    cfg.MODEL.SDCONET.BBOX_WEIGHT = _d.weight_bbox
    cfg.MODEL.SDCONET.GIOU_WEIGHT = _d.weight_giou
    cfg.MODEL.SDCONET.COST_CLASS = _d.cost_class
    cfg.MODEL.SDCONET.COST_BBOX = _d.cost_bbox
    cfg.MODEL.SDCONET.COST_GIOU = _d.cost_giou
    # Sigmoid focal loss alpha/gamma.
    cfg.MODEL.SDCONET.FOCAL_ALPHA = _d.focal_alpha
    cfg.MODEL.SDCONET.FOCAL_GAMMA = _d.focal_gamma
    # Deformable self-attention values: "current" (paper Eq. 8, partially-updated tokens) | "initial" (official).
    cfg.MODEL.SDCONET.VALUE_MODE = _d.value_mode

    # ----------------------------------------------------------------------------------- MODEL.SDCONET.SALIENCY
    cfg.MODEL.SDCONET.SALIENCY = CN()
    # Token filtering: none | layer | level | joint (paper Table IX).
    cfg.MODEL.SDCONET.SALIENCY.FILTER_MODE = _d.filter_mode
    # Fraction of tokens kept per feature level (beta, finest first) and per encoder layer (gamma).
    cfg.MODEL.SDCONET.SALIENCY.LEVEL_RATIOS = list(_d.level_ratios)
    cfg.MODEL.SDCONET.SALIENCY.LAYER_RATIOS = list(_d.layer_ratios)
    # Top-down saliency fusion weight alpha: learnable | fixed | none (paper Table VII); ALPHA_VALUE for "fixed"
    # (1.0 reproduces the official gradient-routing model).
    cfg.MODEL.SDCONET.SALIENCY.ALPHA_MODE = _d.alpha_mode
    cfg.MODEL.SDCONET.SALIENCY.ALPHA_VALUE = _d.alpha_value
    # Top-down propagation: "paper" (S_{l-1} = a*UP(S_l) + Saliency(F_{l-1})) | "official" (feature modulation).
    cfg.MODEL.SDCONET.SALIENCY.PROPAGATION = _d.saliency_propagation
    # Saliency targets: "gaussian" (paper, width SIGMA) | "cone" (official Salience-DETR targets).
    cfg.MODEL.SDCONET.SALIENCY.TARGET = _d.saliency_target
    cfg.MODEL.SDCONET.SALIENCY.SIGMA = _d.saliency_sigma
    # Which levels a box marks: [] = every box at every level (the paper's Eq. 7, default); [64, 128, 256] = the
    # authors' FCOS-style assignment: a token is positive at level l only when max(l, t, r, b) of its box lies in
    # (-1, 64], (64, 128], (128, 256] or (256, inf) HR pixels (LR input pixels x SR.SCALE).
    cfg.MODEL.SDCONET.SALIENCY.LEVEL_RANGES = list(_d.saliency_level_bounds)
    # A box that contains no token centre at a level marks the cell holding its centre (ours, default True, so every
    # small object has a positive token; the authors' code: False).
    cfg.MODEL.SDCONET.SALIENCY.ALWAYS_MARK_CENTER = _d.saliency_always_mark_center
    # Background embedding of skipped tokens: "per_layer" (default; the authors' SDCoNet code: after every encoder
    # layer, to the tokens that layer skipped) | "once" (Salience-DETR: once after the encoder, to the tokens
    # outside the last layer's selection).
    cfg.MODEL.SDCONET.SALIENCY.BACKGROUND_MODE = _d.background_mode
    # Weight of the saliency focal loss.
    cfg.MODEL.SDCONET.SALIENCY.LOSS_WEIGHT = _d.saliency_loss_weight

    # ----------------------------------------------------------------------------------------- MODEL.SDCONET.SR
    cfg.MODEL.SDCONET.SR = CN()
    # SR factor s: the LR input is 1/s of the HR tile; the SR output is s x the LR input.
    cfg.MODEL.SDCONET.SR.SCALE = _d.sr.scale
    # SR decoder: bottleneck width, Swin-block depths/heads per up-stage, window, MLP ratio, drop-path.
    cfg.MODEL.SDCONET.SR.BOTTLENECK_CHANNELS = _d.sr.bottleneck_channels
    cfg.MODEL.SDCONET.SR.DEPTHS = list(_d.sr.depths)
    cfg.MODEL.SDCONET.SR.NUM_HEADS = list(_d.sr.num_heads)
    cfg.MODEL.SDCONET.SR.WINDOW_SIZE = _d.sr.window_size
    cfg.MODEL.SDCONET.SR.MLP_RATIO = _d.sr.mlp_ratio
    cfg.MODEL.SDCONET.SR.DROP_PATH_RATE = _d.sr.drop_path_rate
    # Weight of the L1 SR loss (5 in the official recipe).
    cfg.MODEL.SDCONET.SR.LOSS_WEIGHT = _d.sr.loss_weight

    # ------------------------------------------------------------------------------------------------ MODEL.SWIN
    cfg.MODEL.SWIN = CN()
    # Swin-T shared encoder: patch-embedding width, blocks and heads per stage, window size, MLP ratio.
    cfg.MODEL.SWIN.EMBED_DIM = _d.swin.embed_dim
    cfg.MODEL.SWIN.DEPTHS = list(_d.swin.depths)
    cfg.MODEL.SWIN.NUM_HEADS = list(_d.swin.num_heads)
    cfg.MODEL.SWIN.WINDOW_SIZE = _d.swin.window_size
    cfg.MODEL.SWIN.MLP_RATIO = _d.swin.mlp_ratio
    # Stochastic depth (0.2 for Swin-T detection).
    cfg.MODEL.SWIN.DROP_PATH_RATE = _d.swin.drop_path_rate
    # LR input size (h, w) the encoder is built for (window shifts derive from it); other sizes still run.
    cfg.MODEL.SWIN.IMG_SIZE = list(_d.swin.img_size)
    # ImageNet Swin weights loaded into the encoder(s) when the model is built: a local file (official
    # swin_tiny_patch4_window7_224.pth or a timm checkpoint) or a timm hub name (downloads); "" = random init.
    # MODEL.WEIGHTS and --resume load afterwards and take precedence.
    cfg.MODEL.SWIN.PRETRAINED = ""
    # Outputs of the Swin-T detectron2 backbone (build_sdconet_swin_*backbone, for detectron2's own detectors):
    # "patch" (patch embedding, stride 4) and "stage1".."stage4" (strides 4/8/16/32, each with its LayerNorm).
    cfg.MODEL.SWIN.OUT_FEATURES = ["stage1", "stage2", "stage3", "stage4"]

    # ----------------------------------------------------------------------------------------- MODEL.SR_BRANCH
    # The SR branch as an add-on to any detectron2 detector (sdconet.d2.sr_branch): an SR decoder (the
    # MODEL.SDCONET.SR.* hyper-parameters) on the backbone's bottom-up stages, trained with loss_sr under the
    # gradient-routing schedule (SOLVER.SR_START_EPOCH, SR_LR_MULTIPLIER), never run at inference. SDCoNet itself
    # ignores this node (its variant decides).
    cfg.MODEL.SR_BRANCH = CN()
    cfg.MODEL.SR_BRANCH.ENABLED = False
    # 4 outputs of the bottom-up backbone (backbone.bottom_up, else the backbone), fine to coarse, at strides
    # 4/8/16/32; [] = every output at those strides except "stem"/"patch" (ResNet: res2-res5; they must be in
    # MODEL.RESNETS.OUT_FEATURES).
    cfg.MODEL.SR_BRANCH.IN_FEATURES = []
    # Stride-4 output for the decoder's long skip: "" = "stem" or "patch" when the backbone outputs one, "none" =
    # none (the projected first stage is used instead).
    cfg.MODEL.SR_BRANCH.PATCH_FEATURE = ""
    # Widths the stages are projected to (1x1 conv + GroupNorm; no projection where they already match); the
    # default is SDCoNet's decoder (Swin-T widths).
    cfg.MODEL.SR_BRANCH.DECODER_CHANNELS = [96, 192, 384, 768]
    cfg.MODEL.SR_BRANCH.PROJECTION_GROUPS = 32

    # --------------------------------------------------------------------------------------------------- INPUT
    # "degrade": the mapper reads the HR tile and makes the LR input with sdconet.data.degradation.degrade
    # (training and testing alike, as in the paper). "real": the image file IS the low-quality input (no HR target,
    # no SR loss; use a variant without SR or an SR start epoch beyond the run).
    cfg.INPUT.LR_MODE = "degrade"

    # -------------------------------------------------------------------------------------------------- SOLVER
    # Optimizer over the fixed gradient-routing parameter groups (sdconet.engine.routing): ADAMW | ADAM | SGD
    # (SGD uses SOLVER.MOMENTUM and SOLVER.NESTEROV).
    cfg.SOLVER.OPTIMIZER = "ADAMW" if recipe == "sdconet" else "SGD"
    # LR factor of the pretrained backbone: SDCoNet's shared Swin encoder (and the serial variant's SR encoder);
    # a detectron2 detector's backbone.bottom_up (or its whole backbone when it has no bottom_up).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1 if recipe == "sdconet" else 1.0
    # LR factor rho of the SR decoder (paper Eq. 9: 0 < rho < 1; the authors' code uses 1.0).
    cfg.SOLVER.SR_LR_MULTIPLIER = PAPER_SR_LR_MULTIPLIER
    # BASE_LR is stated for this total batch and scaled linearly to IMS_PER_BATCH by resolve_cfg (detectron2's
    # linear scaling rule, e.g. 0.02 @ 16 -> 0.0025 @ 2), which then sets this key to 0; 0 = BASE_LR as given.
    cfg.SOLVER.BASE_LR_BATCH = 0
    # Run length and MultiStepLR milestones in epochs; MAX_ITER and STEPS are derived from them when
    # MAX_EPOCHS > 0 (MAX_EPOCHS = 0: use MAX_ITER/STEPS/CHECKPOINT_PERIOD/TEST.EVAL_PERIOD as given).
    cfg.SOLVER.MAX_EPOCHS = 52 if recipe == "sdconet" else 0
    cfg.SOLVER.STEPS_EPOCHS = [27] if recipe == "sdconet" else []
    # Gradient routing: first epoch (0-based) of stage 2, where the SR branch and loss_sr switch on (models with
    # an SR branch only). SDCoNet's serial variant always trains SR from the first step (its detector sees the SR
    # image; the authors' serial model is trained jointly from step 0): a later value is overridden to 0, with a
    # warning in the log.
    cfg.SOLVER.SR_START_EPOCH = 16
    # Short runs of a long recipe: 0 = off; > 0 = train this many (whole) epochs instead of MAX_EPOCHS, with
    # SR_START_EPOCH and STEPS_EPOCHS moved to the same fractions of the run (x BUDGET_EPOCHS / MAX_EPOCHS; e.g.
    # 3 epochs of the 52-epoch recipe: SR from epoch 0.92, LR step at epoch 1.56), so the SR branch still trains.
    # Checkpoint and evaluation periods stay in epochs. The resulting iterations are the derived keys below.
    cfg.SOLVER.BUDGET_EPOCHS = 0
    # Derived: first iteration of stage 2 (SR_START_EPOCH x ITERS_PER_EPOCH).
    cfg.SOLVER.SR_START_ITER = -1
    # Derived: ceil(#training images after the loader's filtering / IMS_PER_BATCH).
    cfg.SOLVER.ITERS_PER_EPOCH = -1
    # Checkpoint every this many epochs (derives SOLVER.CHECKPOINT_PERIOD).
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 1
    # Keep OUTPUT_DIR/model_best.pth by this result key of the evaluation ("bbox/AP", "bbox/AP50", "sr/PSNR", ...;
    # higher is better), with detectron2's BestCheckpointer after every evaluation; "" = off. It is chosen on
    # DATASETS.TEST: without a validation split that is the test split (the report says so).
    cfg.SOLVER.BEST_METRIC = "bbox/AP"
    # DDP: SR parameters are unused in stage 1, so DDP must tolerate unused parameters (the trainer turns it on
    # for every model with an SR branch).
    cfg.SOLVER.FIND_UNUSED_PARAMETERS = recipe == "sdconet"

    # ---------------------------------------------------------------------------------------------------- TEST
    # Evaluate every this many epochs (derives TEST.EVAL_PERIOD); 0 = only after the last iteration.
    cfg.TEST.EVAL_PERIOD_EPOCHS = 1
    # Evaluation protocol: "coco" = COCOeval maxDets [1, 10, COCO_MAX_DETS], every number at COCO_MAX_DETS
    # (detectron2's COCOEvaluator); "mmdet" = maxDets [100, 300, 1000] as mmdet's CocoMetric (the paper's
    # numbers): AP at 100, AP50/AP75/size APs and ARs at 1000 (COCO_MAX_DETS unused).
    cfg.TEST.COCO_PROTOCOL = "coco"
    # Headline maxDets of the "coco" protocol: 100 = the COCO standard; 300 scores all kept detections on dense
    # tiles. Must not exceed the detections the model returns (checked at config time).
    cfg.TEST.COCO_MAX_DETS = 100
    # Size buckets by sqrt(box area): "coco" (small < 32, medium 32-96, large >= 96 px) or "aitod" (very tiny
    # < 8, tiny 8-16, small 16-32, medium >= 32 px); GT counts per bucket are reported beside AP/AR.
    cfg.TEST.AREA_RANGES = "coco"
    # Frame the bucket sizes are measured in: "hr" (the HR tile frame the boxes are scored in; the paper's, the
    # authors' code rescales predictions to the HR image) or "lr" (the LR input the detector sees: sides / SCALE).
    cfg.TEST.AREA_FRAME = "hr"
    cfg.TEST.SR_EVAL = CN()
    # Also run the SR branch at evaluation and report PSNR/SSIM of SR vs HR, beside bicubic upsampling of the same
    # LR input (models with SR, LR_MODE degrade).
    cfg.TEST.SR_EVAL.ENABLED = False
    # Pixels shaved from every HR border before PSNR/SSIM (the SR-literature convention is the scale s).
    cfg.TEST.SR_EVAL.CROP_BORDER = 0
    # Write the first N test images as PNG (bicubic | SR | HR side by side) to OUTPUT_DIR/report/sr/ at every
    # evaluation (needs TEST.SR_EVAL.ENABLED); 0 = none.
    cfg.TEST.SR_EVAL.SAVE = 0
    # torch.compile the SDCoNet eval forward (one static graph per padded batch shape; off by default). MODE "" =
    # reduce-overhead (CUDA graphs) on CUDA, default on CPU. Every new padded shape compiles once (the first
    # evaluation pays the warm-up); stock detectron2 models ignore it.
    cfg.TEST.COMPILE = CN()
    cfg.TEST.COMPILE.ENABLED = False
    cfg.TEST.COMPILE.MODE = ""
    # torch.compile backend ("inductor"; "aot_eager" compiles in seconds, no speed-up: for checking a setup).
    cfg.TEST.COMPILE.BACKEND = "inductor"

    if recipe == "sdconet":
        _sdconet_recipe(cfg, _d)
    else:
        # The stock heads' class count: 0 = len(thing_classes) of the training set (resolved into config.yaml).
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 0
        cfg.MODEL.RETINANET.NUM_CLASSES = 0


def _sdconet_recipe(cfg: CN, _d: SDCoNetConfig) -> None:
    """The stock keys as SDCoNet needs them (paper recipe)."""
    cfg.MODEL.META_ARCHITECTURE = "SDCoNet"
    # Core models take RGB normalised with ImageNet statistics (sdconet.modeling.constants, 0-255 scale).
    cfg.MODEL.PIXEL_MEAN = list(PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(PIXEL_STD)
    cfg.INPUT.FORMAT = "RGB"
    # Paper recipe: AdamW 1e-4 / wd 1e-4, batch 2, no warm-up, LR x0.1 at the milestones.
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.WARMUP_FACTOR = 1.0
    cfg.SOLVER.GAMMA = 0.1
    # Full-model gradient-norm clipping ("full_model" is ours; "value"/"norm" are detectron2's per-parameter ones).
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.1
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    # Empty tiles are trained on (official recipe) and count towards the epoch length.
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    # Detections the model keeps per image: top-k over (query, class) pairs, so at most NUM_QUERIES x classes
    # (300 in the official recipe).
    cfg.TEST.DETECTIONS_PER_IMAGE = _d.topk_test


def model_max_detections(cfg: CN) -> int:
    """Detections per image the model returns at most.

    SDCoNet takes the top-k over (query, class) pairs (``sdconet.modeling.postprocess.topk_detections``): k =
    min(TEST.DETECTIONS_PER_IMAGE, MODEL.SDCONET.NUM_QUERIES x classes), the classes being
    ``MODEL.SDCONET.NUM_CLASSES`` (resolved). Other meta-architectures: ``TEST.DETECTIONS_PER_IMAGE``.
    """
    cap = int(cfg.TEST.DETECTIONS_PER_IMAGE)
    if cfg.MODEL.META_ARCHITECTURE == "SDCoNet" and cfg.MODEL.SDCONET.NUM_CLASSES > 0:
        cap = min(cap, int(cfg.MODEL.SDCONET.NUM_QUERIES) * int(cfg.MODEL.SDCONET.NUM_CLASSES))
    return cap


def area_frame_scale(cfg: CN) -> float:
    """GT-frame pixels per pixel of the ``TEST.AREA_FRAME`` frame: ``MODEL.SDCONET.SR.SCALE`` for ``lr`` when the
    LR input is made by degradation (GT boxes are in the HR tile frame), else 1."""
    if cfg.TEST.AREA_FRAME == "lr" and cfg.INPUT.LR_MODE == "degrade":
        return float(cfg.MODEL.SDCONET.SR.SCALE)
    return 1.0


def check_eval_config(cfg: CN) -> None:
    """Validate the evaluation keys (called by :func:`sdconet.d2.schedule.resolve_cfg`, i.e. at config time).

    Raises:
        ValueError: unknown ``TEST.COCO_PROTOCOL`` / ``TEST.AREA_RANGES`` / ``TEST.AREA_FRAME``, or a headline maxDets
            (``TEST.COCO_MAX_DETS``; 100 under ``TEST.COCO_PROTOCOL mmdet``) larger than the detections the model
            returns (``TEST.DETECTIONS_PER_IMAGE``, for SDCoNet capped by queries x classes): that AP would silently
            be an AP at fewer detections.
    """
    t = cfg.TEST
    if t.COCO_PROTOCOL not in PROTOCOLS:
        raise ValueError(f"TEST.COCO_PROTOCOL must be one of {PROTOCOLS} (got {t.COCO_PROTOCOL!r})")
    if t.AREA_RANGES not in AREA_PRESETS:
        raise ValueError(f"TEST.AREA_RANGES must be one of {tuple(AREA_PRESETS)} (got {t.AREA_RANGES!r})")
    if t.AREA_FRAME not in ("hr", "lr"):
        raise ValueError(f"TEST.AREA_FRAME must be 'hr' or 'lr' (got {t.AREA_FRAME!r})")
    if t.COCO_MAX_DETS < 1:
        raise ValueError(f"TEST.COCO_MAX_DETS must be >= 1 (got {t.COCO_MAX_DETS})")
    proto = make_protocol(t.COCO_PROTOCOL, t.COCO_MAX_DETS)
    cap = model_max_detections(cfg)
    if proto.ap_max_dets > cap:
        key = (
            f"TEST.COCO_MAX_DETS ({t.COCO_MAX_DETS})"
            if proto.name == "coco"
            else "TEST.COCO_PROTOCOL mmdet (AP at maxDets 100)"
        )
        limit = f"TEST.DETECTIONS_PER_IMAGE ({t.DETECTIONS_PER_IMAGE})"
        if cap < t.DETECTIONS_PER_IMAGE:
            limit += (
                f", capped at {cap} = MODEL.SDCONET.NUM_QUERIES ({cfg.MODEL.SDCONET.NUM_QUERIES}) x "
                f"{cfg.MODEL.SDCONET.NUM_CLASSES} classes"
            )
        raise ValueError(
            f"{key} asks for more detections per image than the model returns: {limit}. Raise "
            f"TEST.DETECTIONS_PER_IMAGE or lower TEST.COCO_MAX_DETS (the headline maxDets)"
        )


def recipe_for(config_file: str, opts: Sequence[str] = ()) -> str:
    """``"sdconet"`` when the config's meta-architecture is ``SDCoNet`` (or unset), else ``"detectron2"``.

    Reads ``MODEL.META_ARCHITECTURE`` from ``config_file`` (following its ``_BASE_`` chain) and from ``opts``
    (``KEY VALUE`` pairs; the last one wins), without building a config.
    """
    meta = CN.load_yaml_with_base(config_file, allow_unsafe=True).get("MODEL", {}).get("META_ARCHITECTURE")
    opts = list(opts)
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == "MODEL.META_ARCHITECTURE":
            meta = value
    return "sdconet" if meta in (None, "SDCoNet") else "detectron2"


def get_sdconet_cfg(recipe: str = "sdconet") -> CN:
    """detectron2's default config with the plugin's keys added for ``recipe`` (not frozen)."""
    cfg = get_cfg()
    add_sdconet_config(cfg, recipe)
    return cfg


def config_has_sr(cfg: CN) -> bool:
    """Whether the configured model has an SR branch: an SDCoNet variant with SR, or ``MODEL.SR_BRANCH.ENABLED``."""
    if cfg.MODEL.META_ARCHITECTURE == "SDCoNet":
        return cfg.MODEL.SDCONET.VARIANT in SR_VARIANTS
    return bool(cfg.MODEL.SR_BRANCH.ENABLED)


def sdconet_config_from_cfg(cfg: CN) -> SDCoNetConfig:
    """Translate ``cfg.MODEL.SDCONET/SWIN`` (+ ``TEST.DETECTIONS_PER_IMAGE``) into the core's config.

    The key mapping itself is framework-free (:func:`sdconet.config_io.sdconet_config_from_dict`), shared with the
    inference tools that read the same yaml files without detectron2.

    Raises:
        ValueError: if ``MODEL.SDCONET.NUM_CLASSES`` is still 0 (run :func:`sdconet.d2.schedule.resolve_cfg`) or
            a value is invalid (the core's validation names the field).
    """
    if cfg.MODEL.SDCONET.NUM_CLASSES <= 0:
        raise ValueError(
            "MODEL.SDCONET.NUM_CLASSES is 0 (= from the training set's thing_classes) but was not resolved; "
            "call sdconet.d2.resolve_cfg(cfg) after registering DATASETS.TRAIN, or set it explicitly"
        )
    return sdconet_config_from_dict(cfg)


def core_config_kwargs(cfg: CN) -> dict:
    """Keyword arguments of :class:`SDCoNetConfig` read from the detectron2 config: one per field that has a key
    (``num_feature_levels`` has none: SDCoNet always uses 4 levels)."""
    core = sdconet_config_from_cfg(cfg)
    return {f.name: getattr(core, f.name) for f in fields(core) if f.name != "num_feature_levels"}


def load_cfg(config_file: str, opts: Sequence[str] = ()) -> CN:
    """Defaults for the config's recipe (:func:`recipe_for`) + plugin keys + ``config_file`` + ``opts``.

    Not resolved and not frozen (see :func:`setup_cfg`).
    """
    cfg = get_sdconet_cfg(recipe_for(config_file, opts))
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def setup_cfg(config_file: str, opts=(), *, count_images: bool = True) -> CN:
    """Config for a run: :func:`load_cfg`, derived keys resolved, frozen.

    Args:
        config_file: a yaml under ``projects/SDCoNet/configs`` (or one with ``_BASE_`` pointing there).
        opts: ``KEY VALUE`` overrides from the command line.
        count_images: resolve the epoch recipe from the training set (False for evaluation-only runs).
    """
    from .schedule import resolve_cfg  # local: schedule imports detectron2.data, config stays light

    cfg = load_cfg(config_file, opts)
    resolve_cfg(cfg, count_images=count_images)
    cfg.freeze()
    return cfg
