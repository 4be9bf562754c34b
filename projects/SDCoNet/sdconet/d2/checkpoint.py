"""``SDCoNetCheckpointer``: detectron2's checkpointer with the project's loading policy
(:mod:`sdconet.engine.checkpoint_policy`).

* ``--resume`` (continuing a run from ``last_checkpoint``) loads exactly: any missing, unexpected or reshaped key
  is an error naming them all.
* ``--eval-only`` loads exactly, except the ``sr_branch`` rule (an SR-augmented checkpoint evaluated with its
  detector-only variant: the SR weights are dropped, with one log line).
* ``MODEL.WEIGHTS`` for a new training run also allows ``class_heads`` (fine-tuning with another class count: the
  class-dependent tensors are re-initialised, one log line), and detectron2 model-zoo / Caffe2 / pycls backbone files
  (``matching_heuristics``) keep detectron2's heuristic partial load (``imagenet_backbone``).
* NaN / Inf weights are an error in every case; a truncated or unreadable file is one error line with its path
  (:class:`~sdconet.engine.checkpoint_policy.CheckpointReadError`).

Plain core state dicts (keys without the meta-architecture's ``core.`` prefix) are accepted.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Dict

from detectron2.checkpoint import DetectionCheckpointer

from sdconet.engine.checkpoint_policy import (
    ALLOWED_BY_PURPOSE,
    CheckpointReadError,
    check_finite,
    plan_load,
)

__all__ = ["SDCoNetCheckpointer"]

logger = logging.getLogger(__name__)

#: Prefix of the core model's keys in the meta-architecture.
CORE_PREFIX = "core."


class SDCoNetCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with the strict loading policy (module docstring).

    Args:
        model, save_dir, checkpointables: as DetectionCheckpointer.
        eval_only: loads are for evaluation (``--eval-only``): exact except ``sr_branch``.
    """

    def __init__(self, model, save_dir: str = "", *, eval_only: bool = False, **checkpointables) -> None:
        super().__init__(model, save_dir, **checkpointables)
        self.eval_only = bool(eval_only)
        self._resuming = False
        self._path = ""

    @property
    def purpose(self) -> str:
        """``"resume"``, ``"eval"`` or ``"init"``: why the current load happens."""
        if self.eval_only:
            return "eval"
        return "resume" if self._resuming else "init"

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        self._resuming = bool(resume and self.has_checkpoint())
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._resuming = False

    def load(self, path, *args, **kwargs):
        self._path = str(path)
        if path and "://" not in str(path) and not os.path.isfile(path):
            raise CheckpointReadError(f"checkpoint {str(path)!r} does not exist")
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            return super()._load_file(filename)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, KeyError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointReadError(
                f"cannot load checkpoint {filename!r}: truncated or not a torch checkpoint ({reason})"
            ) from exc

    def _load_model(self, checkpoint: Dict[str, Any]):
        path, purpose = self._path, self.purpose
        state = checkpoint["model"]
        self._convert_ndarray_to_tensor(state)
        own = self.model.state_dict()
        if checkpoint.get("matching_heuristics", False):  # ImageNet / model-zoo backbone file
            check_finite(state, path)
            if purpose != "init":
                raise CheckpointReadError(
                    f"checkpoint {path!r} is an ImageNet / model-zoo backbone file: it cannot be used to "
                    f"{'resume a run' if purpose == 'resume' else 'evaluate'}; pass a checkpoint of this model"
                )
            logger.info("partial load (imagenet_backbone): %s by detectron2's matching heuristics", path)
            return super()._load_model(checkpoint)
        state = _normalise_keys(state, own)
        check_finite(state, path, own)
        plan = plan_load(own, state, path, ALLOWED_BY_PURPOSE[purpose])
        self.model.load_state_dict(plan.state, strict=False)
        plan.log(logger)
        logger.info("Loaded %d tensors from %s (%s)", len(plan.state), path, purpose)
        checkpoint.pop("model")
        return None  # nothing to report: every difference was either allowed (and logged) or an error


def _normalise_keys(state: Dict[str, Any], own: Dict[str, Any]) -> Dict[str, Any]:
    """Strip ``module.`` (DDP); add ``core.`` when the checkpoint is a plain core state dict."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if (
        own
        and all(k.startswith(CORE_PREFIX) for k in own)
        and state
        and not any(k.startswith(CORE_PREFIX) for k in state)
    ):
        state = {CORE_PREFIX + k: v for k, v in state.items()}
    return state
