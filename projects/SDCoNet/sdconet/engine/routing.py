"""Detection-prioritised gradient routing (paper Sec. III-E, Algorithm 1) as a framework-free policy.

Two pieces, both used unchanged by the detectron2 trainer (``sdconet.d2``) and by any other training loop:

* :class:`StagePolicy` -- from the (0-based) epoch or iteration it gives the stage: **stage 1** (semantic
  stabilisation: SR branch not run, no SR loss, SR parameters get no gradient) before ``sr_start_epoch``, **stage 2**
  (collaborative refinement: SR branch and ``loss_sr`` on) from ``sr_start_epoch`` on. The stage is a pure function
  of the iteration, so a resumed run lands in the right stage without any stored state.
* :func:`build_param_groups` -- fixed optimizer groups from the first step: shared encoder (lr x backbone
  multiplier, 0.1), detection (lr x 1) and SR decoder (lr x rho, rho < 1), each split into a decayed and a
  no-decay group (norm layers and position tables). The layout never changes (empty groups are kept), so the LR
  scheduler sees every group from iteration 0 and optimizer checkpoints load across stages and on resume.

"Frozen" in stage 1 means "not in the graph", never ``requires_grad=False``: the SR parameters' ``.grad`` stays
``None``, torch optimizers skip such parameters entirely (including AdamW's decoupled weight decay), so the SR
decoder is bit-identical at the end of stage 1. (A zero-valued gradient would not do: AdamW would still decay it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

from torch import nn

from .schedule import epoch_of_iter, epochs_to_iters

__all__ = [
    "DEFAULT_NO_DECAY_KEYWORDS",
    "GROUP_NAMES",
    "PAPER_SR_LR_MULTIPLIER",
    "StagePolicy",
    "build_param_groups",
    "param_group_of",
]

#: Learning-rate groups, in optimizer order. Each has a ``<name>`` (decayed) and ``<name>_no_decay`` variant.
GROUP_NAMES = ("encoder", "detection", "sr")

#: Module prefixes of the core model (docs/ARCHITECTURE.md "Module names").
ENCODER_PREFIXES = ("encoder.", "sr_encoder.")
SR_PREFIXES = ("sr_decoder.",)

#: Default rho: the paper only requires 0 < rho < 1 (Eq. 9). 0.5 halves the SR decoder's step relative to the
#: detection path -- "conservative SR updates" -- while staying well above the encoder's 0.1, so the SR branch
#: still converges within the ~20 remaining epochs of the paper's schedules. The authors' code uses 1.0.
PAPER_SR_LR_MULTIPLIER = 0.5

#: Parameter-name components that mark position tables (no weight decay): Swin's relative-position bias tables
#: and absolute position embedding, generic position embeddings, DINO level embeddings and the token-filtering
#: background embedding (row/column tables, Eq. 8).
DEFAULT_NO_DECAY_KEYWORDS = (
    "relative_position_bias_table",
    "absolute_pos_embed",
    "pos_embed",
    "position_embedding",
    "level_embed",
    "background",
)

_NORM_TYPES: Tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):  # torch >= 2.4
    _NORM_TYPES = _NORM_TYPES + (nn.RMSNorm,)


@dataclass(frozen=True)
class StagePolicy:
    """Which training stage an epoch/iteration belongs to, and whether the SR branch runs.

    Args:
        sr_start_epoch: first (0-based) epoch of stage 2; the paper trains detection alone for 16 epochs, i.e.
            epochs 0..15 are stage 1 and epoch 16 is the first joint epoch. 0 = joint from the start (the authors'
            non-routed variants); a value >= the run length = SR never trained.
        has_sr: the model has an SR branch; without one the SR branch never runs (the stage is still reported).
    """

    sr_start_epoch: float = 16
    has_sr: bool = True

    def __post_init__(self) -> None:
        if self.sr_start_epoch < 0:
            raise ValueError(f"StagePolicy: sr_start_epoch must be >= 0 (got {self.sr_start_epoch})")

    def stage(self, epoch: float) -> int:
        """1 before ``sr_start_epoch``, 2 from it on (``epoch`` 0-based, may be fractional)."""
        return 2 if epoch >= self.sr_start_epoch else 1

    def sr_enabled(self, epoch: float) -> bool:
        """Whether the SR branch (decoder forward + ``loss_sr``) runs in ``epoch``."""
        return self.has_sr and self.stage(epoch) == 2

    def sr_start_iter(self, iters_per_epoch: int) -> int:
        """First iteration of stage 2 (same rounding as :class:`~sdconet.engine.schedule.EpochSchedule`)."""
        return epochs_to_iters(self.sr_start_epoch, iters_per_epoch)

    def stage_at_iter(self, iteration: int, iters_per_epoch: int) -> int:
        """Stage of the 0-based ``iteration`` (the step about to run)."""
        if iteration < 0:
            raise ValueError(f"StagePolicy.stage_at_iter: iteration must be >= 0 (got {iteration})")
        return 2 if iteration >= self.sr_start_iter(iters_per_epoch) else 1

    def sr_enabled_at_iter(self, iteration: int, iters_per_epoch: int) -> bool:
        """Whether the SR branch runs in the 0-based ``iteration``."""
        return self.has_sr and self.stage_at_iter(iteration, iters_per_epoch) == 2

    def epoch_at_iter(self, iteration: int, iters_per_epoch: int) -> int:
        """0-based epoch of ``iteration`` (for logging)."""
        return epoch_of_iter(iteration, iters_per_epoch)


def param_group_of(
    name: str,
    encoder_prefixes: Sequence[str] = ENCODER_PREFIXES,
    sr_prefixes: Sequence[str] = SR_PREFIXES,
) -> str:
    """Learning-rate group of a parameter name: ``"encoder"``, ``"sr"`` or ``"detection"``.

    With the default prefixes (the core SDCoNet model): ``encoder.*`` and ``sr_encoder.*`` (the serial variant's
    SR-path Swin) -> ``"encoder"``; ``sr_decoder.*`` -> ``"sr"``; everything else (detection levels, saliency,
    transformer, heads, alpha) -> ``"detection"``. Other models pass their own prefixes (e.g. a detectron2
    detector: ``backbone.bottom_up.`` and ``sr_branch.``). SR prefixes are checked first.
    """
    if name.startswith(tuple(sr_prefixes)):
        return "sr"
    if name.startswith(tuple(encoder_prefixes)):
        return "encoder"
    return "detection"


def _no_decay_names(model: nn.Module, keywords: Sequence[str], norms: bool) -> set:
    names = set()
    keywords = set(keywords)
    for mod_name, module in model.named_modules():
        is_norm = norms and isinstance(module, _NORM_TYPES)
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if is_norm or keywords.intersection(full.split(".")):
                names.add(full)
    return names


def build_param_groups(
    model: nn.Module,
    *,
    base_lr: float = 1e-4,
    weight_decay: float = 1e-4,
    backbone_multiplier: float = 0.1,
    sr_multiplier: float = PAPER_SR_LR_MULTIPLIER,
    no_decay_norms: bool = True,
    no_decay_keywords: Iterable[str] = DEFAULT_NO_DECAY_KEYWORDS,
    encoder_prefixes: Sequence[str] = ENCODER_PREFIXES,
    sr_prefixes: Sequence[str] = SR_PREFIXES,
) -> List[Dict]:
    """Fixed optimizer parameter groups for the core SDCoNet model (or any model, given its prefixes).

    Every parameter is placed exactly once, **including** ``requires_grad=False`` ones and ones unused in the
    current stage (they simply never get a ``.grad``). The returned list always has six groups, in the order
    ``encoder, encoder_no_decay, detection, detection_no_decay, sr, sr_no_decay``; empty groups are kept so the
    layout is identical for every variant, stage and resume.

    Args:
        model: the framework-free core model (children ``encoder``, ``sr_decoder``, ``detector``, ...). Pass the
            core module itself, not an adapter that nests it under another name.
        base_lr: learning rate of the detection group (paper: 1e-4).
        weight_decay: weight decay of the decayed groups (paper: 1e-4).
        backbone_multiplier: lr factor of the shared encoder (paper: 0.1).
        sr_multiplier: lr factor rho of the SR decoder (paper: 0 < rho < 1; official code: 1.0).
        no_decay_norms: no weight decay on parameters of normalisation layers.
        no_decay_keywords: no weight decay on parameters with one of these as a dotted-name component.
        encoder_prefixes: parameter-name prefixes of the (pretrained) backbone that gets ``backbone_multiplier``.
        sr_prefixes: parameter-name prefixes of the SR branch that gets ``sr_multiplier``.

    Returns:
        list of dicts ``{"name", "params", "lr", "weight_decay", "lr_multiplier"}`` for ``torch.optim``
        (extra keys are kept by torch optimizers and show up in their state dicts).

    Raises:
        ValueError: on non-positive ``base_lr`` or multipliers, or a negative weight decay.
    """
    if base_lr <= 0:
        raise ValueError(f"build_param_groups: base_lr must be > 0 (got {base_lr})")
    if weight_decay < 0:
        raise ValueError(f"build_param_groups: weight_decay must be >= 0 (got {weight_decay})")
    for arg, value in (("backbone_multiplier", backbone_multiplier), ("sr_multiplier", sr_multiplier)):
        if value <= 0:
            raise ValueError(f"build_param_groups: {arg} must be > 0 (got {value})")
    multipliers = {"encoder": backbone_multiplier, "detection": 1.0, "sr": sr_multiplier}
    no_decay = _no_decay_names(model, tuple(no_decay_keywords), no_decay_norms)

    groups: Dict[str, Dict] = {}
    for group in GROUP_NAMES:
        for decay in (True, False):
            name = group if decay else f"{group}_no_decay"
            groups[name] = {
                "name": name,
                "params": [],
                "lr": base_lr * multipliers[group],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_multiplier": multipliers[group],
            }
    for name, param in model.named_parameters():
        key = param_group_of(name, encoder_prefixes, sr_prefixes)
        if name in no_decay:
            key = f"{key}_no_decay"
        groups[key]["params"].append(param)
    return list(groups.values())
