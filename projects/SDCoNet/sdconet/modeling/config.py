"""Plain-Python description of an SDCoNet model (no detectron2, no yacs).

`SDCoNetConfig` holds every architecture and loss option; `build_sdconet` (in ``sdconet.modeling.build``) turns
it into an ``nn.Module``. Adapters (detectron2's ``from_config``, the inference tools) only translate their own
configuration format into this dataclass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Tuple

#: The ablation variants of the paper (Tables VI, VIII): which branches exist.
VARIANTS = {
    # name: (saliency-driven token filtering, SR branch, serial SR -> detection)
    "dino": (False, False, False),
    "dino_saliency": (True, False, False),
    "dino_sr": (False, True, False),
    "sdconet": (True, True, False),
    "serial": (True, True, True),
}

FILTER_MODES = ("none", "layer", "level", "joint")
ALPHA_MODES = ("learnable", "fixed", "none")
SALIENCY_TARGETS = ("gaussian", "cone")
VALUE_MODES = ("current", "initial")
BACKGROUND_MODES = ("per_layer", "once")


@dataclass
class SwinConfig:
    """Swin-T encoder hyper-parameters (paper Sec. III-B)."""

    embed_dim: int = 96
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    # Input size the timm model is built for (window shifts are derived from it); other sizes still run.
    img_size: Tuple[int, int] = (256, 256)


@dataclass
class SRConfig:
    """SR decoder hyper-parameters (paper Eq. 2-4; defaults follow the official decoder)."""

    scale: int = 2
    bottleneck_channels: int = 1536
    depths: Tuple[int, ...] = (2, 6, 2, 2)
    num_heads: Tuple[int, ...] = (6, 12, 6, 3)
    window_size: int = 8
    mlp_ratio: float = 2.0
    drop_path_rate: float = 0.1
    loss_weight: float = 5.0


@dataclass
class SDCoNetConfig:
    """Every option of the model. Defaults reproduce the paper's SDCoNet on NWPU VHR-10-Split (LR 256²)."""

    num_classes: int = 10
    variant: str = "sdconet"

    swin: SwinConfig = field(default_factory=SwinConfig)
    sr: SRConfig = field(default_factory=SRConfig)

    # --- DINO detector -------------------------------------------------------------------------------------
    hidden_dim: int = 256
    num_feature_levels: int = 4
    nheads: int = 8
    num_points: int = 4
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.0
    num_queries: int = 300
    # Contrastive denoising (DINO): total positive+negative budget per group set, noise scales.
    dn_number: int = 100
    label_noise_ratio: float = 0.5
    box_noise_scale: float = 1.0
    # Images with more GT than this use a random subset for denoising queries (memory on dense tiles); 0 = no cap.
    dn_max_gt: int = 0
    # Loss weights and matcher costs.
    weight_class: float = 1.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Detections kept per image at inference (top-k over queries x classes).
    topk_test: int = 300

    # --- Saliency-driven token filtering (Sec. III-D) ---------------------------------------------------------
    filter_mode: str = "joint"
    level_ratios: Tuple[float, ...] = (0.6, 0.8, 1.0, 1.0)
    layer_ratios: Tuple[float, ...] = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2)
    alpha_mode: str = "learnable"
    alpha_value: float = 0.5
    # "paper": S_{l-1} = a * UP(S_l) + Saliency(F_{l-1}); "official": Salience-DETR feature modulation.
    saliency_propagation: str = "paper"
    saliency_target: str = "gaussian"
    # Gaussian width in units of the box half-size; 1/sqrt(2 ln 2) puts 0.5 at edge midpoints (like the cone).
    saliency_sigma: float = 0.8493218002880191
    saliency_loss_weight: float = 2.0
    # Saliency level assignment: () = every box marks every level (paper Eq. 7); (64, 128, 256) = the authors'
    # FCOS-style ranges (-1, 64], (64, 128], (128, 256], (256, inf) of max(l, t, r, b) in HR pixels.
    saliency_level_bounds: Tuple[float, ...] = ()
    # A box containing no token centre at a level marks its centre cell (ours; the official code has no such rule).
    saliency_always_mark_center: bool = True
    # Deformable self-attention values: "current" partially-updated tokens (paper Eq. 8) or "initial" (official).
    value_mode: str = "current"
    # Background embedding: "per_layer" = added after every encoder layer to the tokens that layer skipped (the
    # authors' SDCoNet code); "once" = added once after the encoder to tokens outside the last layer's set
    # (Salience-DETR).
    background_mode: str = "per_layer"

    def __post_init__(self) -> None:
        if isinstance(self.swin, dict):
            self.swin = SwinConfig(**self.swin)
        if isinstance(self.sr, dict):
            self.sr = SRConfig(**self.sr)
        self.validate()

    # ------------------------------------------------------------------------------------------------------
    @property
    def use_saliency(self) -> bool:
        return VARIANTS[self.variant][0]

    @property
    def use_sr(self) -> bool:
        return VARIANTS[self.variant][1]

    @property
    def serial(self) -> bool:
        return VARIANTS[self.variant][2]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field."""

        def check(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ValueError(f"SDCoNetConfig.{name}: {msg} (got {getattr(self, name)!r})")

        check(self.variant in VARIANTS, "variant", f"must be one of {sorted(VARIANTS)}")
        check(self.num_classes >= 1, "num_classes", "must be >= 1")
        check(self.filter_mode in FILTER_MODES, "filter_mode", f"must be one of {FILTER_MODES}")
        check(self.alpha_mode in ALPHA_MODES, "alpha_mode", f"must be one of {ALPHA_MODES}")
        check(self.saliency_propagation in ("paper", "official"), "saliency_propagation", "paper|official")
        check(self.saliency_target in SALIENCY_TARGETS, "saliency_target", f"one of {SALIENCY_TARGETS}")
        check(self.value_mode in VALUE_MODES, "value_mode", f"must be one of {VALUE_MODES}")
        check(self.background_mode in BACKGROUND_MODES, "background_mode", f"must be one of {BACKGROUND_MODES}")
        bounds = tuple(self.saliency_level_bounds)
        check(
            len(bounds) in (0, self.num_feature_levels - 1)
            and all(b > 0 for b in bounds)
            and all(a < b for a, b in zip(bounds, bounds[1:])),
            "saliency_level_bounds",
            f"() or {self.num_feature_levels - 1} increasing positive bounds in HR px, e.g. (64, 128, 256)",
        )
        check(
            len(self.level_ratios) == self.num_feature_levels, "level_ratios", "one ratio per feature level"
        )
        check(len(self.layer_ratios) == self.enc_layers, "layer_ratios", "one ratio per encoder layer")
        check(all(0 < r <= 1 for r in self.level_ratios), "level_ratios", "ratios must lie in (0, 1]")
        check(all(0 < r <= 1 for r in self.layer_ratios), "layer_ratios", "ratios must lie in (0, 1]")
        check(self.hidden_dim % self.nheads == 0, "hidden_dim", "must be divisible by nheads")
        check(self.num_queries >= 1, "num_queries", "must be >= 1")
        check(self.topk_test >= 1, "topk_test", "must be >= 1")
        check(self.sr.scale in (2, 3, 4), "sr", "sr.scale must be 2, 3 or 4")
        check(
            self.num_feature_levels == 4, "num_feature_levels", "SDCoNet uses 4 levels (strides 8/16/32/64)"
        )

    def replace(self, **changes) -> SDCoNetConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SDCoNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"SDCoNetConfig: unknown keys {sorted(unknown)}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def tiny(cls, **changes) -> SDCoNetConfig:
        """A reduced model for CPU tests and the quick demo (same code paths, small widths)."""
        base = cls(
            swin=SwinConfig(
                embed_dim=24,
                depths=(1, 1, 1, 1),
                num_heads=(1, 2, 2, 4),
                drop_path_rate=0.0,
                img_size=(64, 64),
            ),
            sr=SRConfig(
                bottleneck_channels=96, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 1), drop_path_rate=0.0
            ),
            hidden_dim=64,
            nheads=4,
            num_points=2,
            enc_layers=2,
            dec_layers=3,
            dim_feedforward=128,
            num_queries=50,
            dn_number=20,
            topk_test=50,
            layer_ratios=(1.0, 0.6),
        )
        return replace(base, **changes)
