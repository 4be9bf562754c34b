"""Training hooks: exact-resume state, the gradient-routing stage switch and SDCoNet's extra training statistics."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Sequence

import torch
from detectron2.engine import HookBase
from detectron2.engine import hooks as d2_hooks
from detectron2.utils import comm

from sdconet.data.atomic import atomic_write_json, atomic_write_text
from sdconet.engine.determinism import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from sdconet.engine.routing import StagePolicy
from sdconet.evaluation.report import set_report_note

from .solver import core_of, unwrap
from .train_loader import stream_sampler_of

__all__ = ["BestCheckpointer", "ResumeStateHook", "SRStageHook", "TrainingStatsHook", "sr_controller"]

logger = logging.getLogger(__name__)


def sr_controller(model):
    """The object that owns a model's SR switch (``has_sr``, ``sr_enabled``, ``set_sr_enabled``), or None.

    SDCoNet: its core (None for variants without SR); a detectron2 detector with the SR add-on
    (:mod:`sdconet.d2.sr_branch`): the detector itself; any other model: None. DDP wrappers are looked through.
    """
    model = unwrap(model)
    obj = getattr(model, "core", model)
    return obj if bool(getattr(obj, "has_sr", False)) else None


class SRStageHook(HookBase):
    """Switches the model's SR branch (:func:`sr_controller`) between stage 1 (off) and stage 2 (on) by iteration.

    The stage is a pure function of the iteration (:meth:`StagePolicy.stage_at_iter`), applied in ``before_train``
    (so ``--resume`` lands in the right stage: ``trainer.iter`` is the resumed iteration there) and checked before
    every step (one comparison). Every rank runs it at the same iteration. It only toggles
    ``set_sr_enabled`` -- never ``requires_grad`` -- so the DDP wrapper (built with
    ``find_unused_parameters=True``) stays valid across the switch. The stage is logged as the scalar ``stage``.

    Args:
        policy: the framework-free stage policy (SR start epoch, whether the model has SR).
        iters_per_epoch: iterations per epoch of this run.
    """

    def __init__(self, policy: StagePolicy, iters_per_epoch: int) -> None:
        if iters_per_epoch <= 0:
            raise ValueError(f"SRStageHook: iters_per_epoch must be > 0 (got {iters_per_epoch})")
        self.policy = policy
        self.iters_per_epoch = int(iters_per_epoch)
        self.stage = 0

    def _apply(self) -> None:
        it = self.trainer.iter
        stage = self.policy.stage_at_iter(it, self.iters_per_epoch)
        enabled = self.policy.sr_enabled_at_iter(it, self.iters_per_epoch)
        core = sr_controller(self.trainer.model)
        if core is None:
            raise ValueError(
                "SRStageHook: the model has no SR branch (install the hook only for models with one)"
            )
        if stage != self.stage or bool(core.sr_enabled) != enabled:
            core.set_sr_enabled(enabled)
            logger.info(
                "Gradient routing: iteration %d (epoch %d) -> stage %d (SR branch %s)",
                it,
                self.policy.epoch_at_iter(it, self.iters_per_epoch),
                stage,
                "on" if core.sr_enabled else "off",
            )
            self.stage = stage

    def before_train(self) -> None:
        self._apply()

    def before_step(self) -> None:
        self._apply()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("stage", float(self.stage), smoothing_hint=False)


class TrainingStatsHook(HookBase):
    """Logs per-group learning rates (``lr/<group>``), the pre-clip gradient norm (``grad_norm``) and the model's
    ``last_stats`` if it has any (``train/kept_token_ratio``, ``train/sr_psnr`` while SR trains) to the
    EventStorage, i.e. to ``metrics.json`` and TensorBoard. Main process only (statistics of its own batch)."""

    def after_step(self) -> None:
        if not comm.is_main_process():
            return
        storage = self.trainer.storage
        for group in self.trainer.optimizer.param_groups:
            if group["params"] and "name" in group:
                storage.put_scalar(f"lr/{group['name']}", group["lr"], smoothing_hint=False)
        grad_norm = getattr(self.trainer.optimizer, "last_grad_norm", float("nan"))
        if math.isfinite(grad_norm):
            storage.put_scalar("grad_norm", grad_norm)
        for key, value in (getattr(core_of(self.trainer.model), "last_stats", None) or {}).items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = float(value)  # the model keeps its statistics on the device (no sync in forward)
            if isinstance(value, (int, float)) and math.isfinite(value):
                storage.put_scalar(f"train/{key}", float(value))


class _UntaggedSaver:
    """Saves through a checkpointer without moving its ``last_checkpoint`` tag: ``--resume`` must continue from the
    latest periodic checkpoint, never from ``model_best.pth`` (which after an interruption in the last iteration
    would claim the run was finished)."""

    def __init__(self, checkpointer) -> None:
        self.checkpointer = checkpointer

    def save(self, name: str, **kwargs) -> None:
        ckpt = self.checkpointer
        tag = os.path.join(ckpt.save_dir, "last_checkpoint") if ckpt.save_dir else None
        previous = None
        if tag and os.path.isfile(tag):
            with open(tag, encoding="utf-8") as f:
                previous = f.read()
        ckpt.save(name, **kwargs)
        if tag and ckpt.save_to_disk:
            if previous is None:
                if os.path.isfile(tag):
                    os.remove(tag)
            else:
                atomic_write_text(tag, previous)


class BestCheckpointer(d2_hooks.BestCheckpointer):
    """detectron2's ``BestCheckpointer`` (``OUTPUT_DIR/model_best.pth`` when ``metric`` improves; higher is better)
    that also

    * keeps the best value in ``OUTPUT_DIR/model_best.json`` (``{"metric", "value", "iteration"}``) and restores it
      on ``--resume``, so a resumed run does not overwrite a better earlier checkpoint;
    * leaves ``last_checkpoint`` alone (``--resume`` continues from the periodic checkpoints);
    * sets the ``best_checkpoint`` note of ``OUTPUT_DIR/report.md`` (which split chose it).

    Place it after the ``EvalHook`` (it reads the metric the evaluation just stored). Main process only.

    Args:
        eval_period: the ``EvalHook``'s period (0 = only after training).
        checkpointer: the trainer's checkpointer.
        metric: result key, e.g. ``bbox/AP``.
        output_dir: ``OUTPUT_DIR``.
        datasets: the evaluated datasets (``DATASETS.TEST``), named in the report note.
    """

    def __init__(self, eval_period: int, checkpointer, metric: str, output_dir: str, datasets: Sequence[str]):
        super().__init__(eval_period, _UntaggedSaver(checkpointer), metric, mode="max", file_prefix="model_best")
        self.output_dir = output_dir
        self.datasets = list(datasets)
        self.state_path = os.path.join(output_dir, "model_best.json")

    def before_train(self) -> None:
        if self.trainer.iter > 0 and os.path.isfile(self.state_path):  # resumed run
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
            if state.get("metric") == self._val_metric:
                self.best_metric, self.best_iter = float(state["value"]), int(state["iteration"])
                logger.info(
                    "Best checkpoint so far: %s = %.4f at iteration %d (%s)",
                    self._val_metric, self.best_metric, self.best_iter, self.state_path,
                )  # fmt: skip

    def _best_checking(self) -> None:
        before = (self.best_metric, self.best_iter)
        super()._best_checking()
        if self.best_metric is None:
            return
        if (self.best_metric, self.best_iter) != before:
            atomic_write_json(
                self.state_path,
                {"metric": self._val_metric, "value": self.best_metric, "iteration": self.best_iter},
            )
        names = ", ".join(self.datasets)
        set_report_note(
            self.output_dir,
            "best_checkpoint",
            f"model_best.pth: iteration {self.best_iter}, {self._val_metric} = {self.best_metric:.2f}, chosen on "
            f"DATASETS.TEST ({names}). Without a separate validation split that is the test split, so its numbers "
            "are optimistic; the tables above are those of the checkpoint evaluated last (at the end of training: "
            "the final checkpoint, the headline).",
        )


class ResumeStateHook(HookBase):
    """Makes a stopped and resumed run equal the uninterrupted one (on CPU: bit-identical weights).

    * Before every step, Python's ``random``, NumPy, torch (CPU + CUDA) and the model's own generators are seeded
      from ``(seed, iteration, rank)`` (:func:`sdconet.engine.determinism.seed_everything`): what a step draws (e.g.
      DINO's denoising noise) does not depend on what ran before it (evaluation, data-loader start-up, a resume).
    * The training stream (:func:`sdconet.d2.train_loader.build_resumable_train_loader`) starts at the trainer's
      iteration with the run's seed: batch ``i`` and its augmentations are those of the uninterrupted run.
    * Its state -- the run's seed and the RNG states at the checkpoint -- is saved with every checkpoint (the
      trainer's ``hooks`` state) and restored by ``--resume``, so a run started with ``SEED -1`` (a random seed)
      resumes with the seed it drew.

    Args:
        seed: the run's seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def before_train(self) -> None:
        sampler = stream_sampler_of(self.trainer.data_loader)
        if sampler is not None:
            sampler.seed = self.seed
            sampler.start_iter = self.trainer.iter
        logger.info("Exact resume: seed %d, data stream from batch %d", self.seed, self.trainer.iter)

    def before_step(self) -> None:
        seed_everything(
            derive_seed(self.seed, "step", self.trainer.iter, comm.get_rank()), self.trainer.model
        )

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "iteration": self.trainer.iter,
            "rng": capture_rng_state(self.trainer.model),
        }

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        restore_rng_state(state["rng"], self.trainer.model)
