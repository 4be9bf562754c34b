"""When may a checkpoint be loaded into a model, and how much of it (framework-free; used by ``tools/predict.py``'s
loader and by the detectron2 checkpointer of ``train_net.py``).

* **Non-finite weights are an error** (:func:`check_finite`): a checkpoint holding NaN or Inf is refused with its
  path and the tensors at fault, never turned into a model that detects nothing.
* **Strict by default** (:func:`plan_load`): every model key must be in the checkpoint with the same shape and every
  checkpoint key must be used; otherwise :class:`CheckpointMismatchError` names the missing, unexpected and
  wrongly-shaped keys.
* **Partial loads only by an explicit allow-list** (:data:`PARTIAL_LOAD_RULES`), each applied with one log line:

  - ``class_heads``: fine-tuning with a different class count; the class-dependent tensors (classification
    heads, the denoising label embedding; box predictors of stock detectors) are re-initialised.
  - ``sr_branch``: an SR-augmented checkpoint loaded into its detector without the SR branch; the SR weights are
    dropped.
  - ImageNet backbone weights are not a partial load of a detector checkpoint: they are loaded into the encoder by
    ``MODEL.SWIN.PRETRAINED`` (:func:`sdconet.modeling.backbone.load_swin_weights`, strict on the backbone keys) or,
    for detectron2 model-zoo / Caffe2 files, by detectron2's matching heuristics (``imagenet_backbone`` in the
    detectron2 checkpointer).

Which rules apply depends on why the weights are loaded (:data:`ALLOWED_BY_PURPOSE`): resuming a run allows none,
evaluating or predicting allows ``sr_branch``, initialising a new training run from ``MODEL.WEIGHTS`` allows both.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "ALLOWED_BY_PURPOSE",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "LoadPlan",
    "NonFiniteWeightsError",
    "PARTIAL_LOAD_RULES",
    "PartialLoadRule",
    "check_finite",
    "plan_load",
]

logger = logging.getLogger(__name__)

#: Keys listed per category in an error before "... and N more".
MAX_KEYS_SHOWN = 12


def _show(keys: Iterable) -> str:
    keys = list(keys)
    head = ", ".join(str(k) for k in keys[:MAX_KEYS_SHOWN])
    return head + (f", ... and {len(keys) - MAX_KEYS_SHOWN} more" if len(keys) > MAX_KEYS_SHOWN else "")


class CheckpointReadError(ValueError):
    """The file is missing, truncated or not a torch checkpoint (one line naming the file)."""


class NonFiniteWeightsError(ValueError):
    """The checkpoint holds NaN or Inf values.

    Attributes:
        path: the checkpoint.
        bad: ``(key, number of non-finite values, number of values)`` per broken tensor.
    """

    def __init__(self, path: str, bad: Sequence[tuple[str, int, int]], total: int):
        self.path = str(path)
        self.bad = list(bad)
        shown = [f"{k} ({n}/{m})" for k, n, m in self.bad]
        super().__init__(
            f"checkpoint {self.path!r} holds NaN/Inf values in {len(self.bad)} of {total} tensors: {_show(shown)}; "
            "refusing to load broken weights (was the run diverging? use an earlier checkpoint)"
        )


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model built from the config.

    Attributes:
        path: the checkpoint file (or ``"<state dict>"``).
        missing: model keys the checkpoint lacks.
        unexpected: checkpoint keys the model does not have.
        shape_mismatch: ``(key, checkpoint shape, model shape)`` triples.
        allowed: the partial-load rules that were allowed (and did not cover these keys).
    """

    def __init__(self, path: str, missing, unexpected, shape_mismatch, allowed: Sequence[str] = ()):
        self.path = path
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.shape_mismatch = sorted(shape_mismatch)
        self.allowed = tuple(allowed)
        parts = []
        if self.shape_mismatch:
            shapes = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in self.shape_mismatch]
            parts.append(f"{len(shapes)} with different shapes: {_show(shapes)}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the checkpoint: {_show(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} not in the model: {_show(self.unexpected)}")
        allowed_text = f" (partial loads allowed here: {', '.join(self.allowed)})" if self.allowed else ""
        super().__init__(
            f"checkpoint {path!r} does not match the model built from the config (check --config-file, e.g. the "
            f"variant, widths or NUM_CLASSES){allowed_text}: " + "; ".join(parts)
        )


@dataclass(frozen=True)
class PartialLoadRule:
    """One intended partial load (glob patterns on key names; keys may carry a ``core.`` / ``module.`` prefix).

    Attributes:
        name: the rule's name (the allow-list entry).
        message: the log line when it applies (``{n}`` = number of keys).
        reshaped: keys whose shape may differ; the model keeps its own (freshly initialised) tensor.
        unexpected: checkpoint keys the model may lack; they are dropped.
        missing: model keys the checkpoint may lack; the model keeps its own tensor.
    """

    name: str
    message: str
    reshaped: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


PARTIAL_LOAD_RULES: dict[str, PartialLoadRule] = {
    "class_heads": PartialLoadRule(
        "class_heads",
        "fine-tuning with a different class count: re-initialised {n} class-dependent tensors",
        reshaped=(
            "*detector.class_heads.*",
            "*detector.enc_class_head.*",
            "*detector.dn.label_enc.*",
            "*box_predictor.cls_score.*",  # stock detectron2 R-CNN heads
            "*box_predictor.bbox_pred.*",
            "*head.cls_score.*",  # stock RetinaNet
        ),
    ),
    "sr_branch": PartialLoadRule(
        "sr_branch",
        "SR-augmented checkpoint into a model without the SR branch: dropped {n} SR tensors",
        unexpected=("*sr_decoder.*", "*sr_encoder.*", "*sr_branch.*"),  # SDCoNet; the SR add-on of stock detectors
    ),
}

#: Partial-load rules allowed per purpose of the load.
ALLOWED_BY_PURPOSE: dict[str, tuple[str, ...]] = {
    "resume": (),
    "eval": ("sr_branch",),
    "init": ("class_heads", "sr_branch"),
}


def check_finite(
    state: Mapping[str, torch.Tensor], path: str, reference: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Raise :class:`NonFiniteWeightsError` when a floating-point tensor of ``state`` holds NaN or Inf.

    Args:
        state: the checkpoint's tensors.
        path: the file, for the message.
        reference: the model's own state; a key whose fresh tensor is itself non-finite (e.g. a ``-inf`` mask
            buffer) is not checked.
    """
    bad = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        own = reference.get(key) if reference is not None else None
        if isinstance(own, torch.Tensor) and own.is_floating_point() and not torch.isfinite(own).all():
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad.append((key, int((~finite).sum()), int(value.numel())))
    if bad:
        raise NonFiniteWeightsError(path, bad, len(state))


@dataclass
class LoadPlan:
    """What :func:`plan_load` decided.

    Attributes:
        state: the tensors to load (``load_state_dict(state, strict=False)``).
        applied: rule name -> keys it covered.
        kept: model keys that keep their own tensor (re-initialised or missing by a rule).
    """

    state: dict[str, torch.Tensor]
    applied: dict[str, list[str]] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)

    def log(self, log: logging.Logger = logger) -> None:
        """One line per applied rule."""
        for name, keys in self.applied.items():
            log.info("partial load (%s): %s", name, PARTIAL_LOAD_RULES[name].message.format(n=len(keys)))


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(key, p.lstrip("*")) for p in patterns)


def plan_load(
    model_state: Mapping[str, torch.Tensor],
    ckpt_state: Mapping[str, torch.Tensor],
    path: str = "<state dict>",
    allow: Sequence[str] = (),
) -> LoadPlan:
    """Decide what of ``ckpt_state`` to load into a model whose state is ``model_state``.

    Args:
        model_state: ``model.state_dict()``.
        ckpt_state: the checkpoint's tensors (same key convention as the model).
        path: the file, for messages.
        allow: names of :data:`PARTIAL_LOAD_RULES` that may apply.

    Raises:
        CheckpointMismatchError: differences no allowed rule covers (all of them are named).
        KeyError: an unknown rule name.
    """
    rules = [PARTIAL_LOAD_RULES[name] for name in allow]
    missing = set(model_state) - set(ckpt_state)
    unexpected = set(ckpt_state) - set(model_state)
    reshaped = {
        k
        for k in set(model_state) & set(ckpt_state)
        if tuple(ckpt_state[k].shape) != tuple(model_state[k].shape)
    }
    plan = LoadPlan(state={})
    for rule in rules:
        covered = [k for k in sorted(reshaped) if _matches(k, rule.reshaped)]
        covered += [k for k in sorted(unexpected) if _matches(k, rule.unexpected)]
        covered += [k for k in sorted(missing) if _matches(k, rule.missing)]
        if covered:
            plan.applied[rule.name] = covered
            reshaped -= set(covered)
            unexpected -= set(covered)
            missing -= set(covered)
    if missing or unexpected or reshaped:
        shapes = [(k, tuple(ckpt_state[k].shape), tuple(model_state[k].shape)) for k in reshaped]
        raise CheckpointMismatchError(path, missing, unexpected, shapes, allowed=allow)
    covered_all = {k for keys in plan.applied.values() for k in keys}
    plan.state = {k: v for k, v in ckpt_state.items() if k in model_state and k not in covered_all}
    plan.kept = sorted(k for k in model_state if k not in plan.state)
    return plan
