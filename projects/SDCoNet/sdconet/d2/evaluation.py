"""Evaluation in detectron2: ONE evaluator builder, the protocol-aware COCO evaluator and the run report.

* :class:`ProtocolCOCOEvaluator` -- detectron2's ``COCOEvaluator`` (same inputs, same ``coco_instances_results.json``,
  same ``bbox/AP``, ``bbox/AP-<class>`` result keys) whose scoring is the framework-free
  :func:`sdconet.evaluation.coco_protocol.evaluate_coco`: protocol ``coco``/``mmdet`` (``TEST.COCO_PROTOCOL``),
  size buckets ``coco``/``aitod`` with GT counts (``TEST.AREA_RANGES``), frame ``hr``/``lr`` (``TEST.AREA_FRAME``).
* :func:`build_evaluator` -- the evaluators of a config for one dataset (``SDCoNetTrainer.build_evaluator``).
* :func:`write_evaluation_report` -- ``OUTPUT_DIR/report.md`` / ``report.json`` / ``report/*.png`` after every
  evaluation (``SDCoNetTrainer.test`` calls it).

Result keys (``bbox/...`` in ``metrics.json``; percent): ``AP``, ``AP50``, ``AP75``, ``AP<b>`` per size bucket ``b``
(``s``/``m``/``l`` or ``vt``/``t``/``s``/``m``), ``AR@<m>`` per maxDets, ``AR<b>``, ``nGT`` and ``nGT<b>`` (scored GT
objects), and per class ``AP-<class>``, ``AP<b>-<class>``, ``AR-<class>``, ``AR<b>-<class>``, ``nGT-<class>``,
``nGT<b>-<class>``; ``bbox_errors/...``: TIDE's AP50 (``AP50``), the AP50 gained by fixing each error type
(``dAP_Cls``, ``dAP_Loc``, ``dAP_Both``, ``dAP_Dupe``, ``dAP_Bkg``, ``dAP_Miss``, ``dAP_FalsePos``, ``dAP_FalseNeg``)
and the error counts (``n_Cls``, ...).
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional

from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from pycocotools.cocoeval import COCOeval

from sdconet.evaluation.coco_protocol import evaluate_coco, make_protocol, max_dets_note
from sdconet.evaluation.errors import ERROR_TYPES, error_breakdown
from sdconet.evaluation.report import format_coco_tables, format_errors_table, write_run_report

from .config import area_frame_scale, config_has_sr, model_max_detections
from .sr_evaluator import SREvaluator

__all__ = [
    "ProtocolCOCOEvaluator",
    "append_metrics_json",
    "build_evaluator",
    "flat_bbox_results",
    "write_evaluation_report",
]

logger = logging.getLogger(__name__)


def flat_error_results(errors: Mapping[str, Any]) -> OrderedDict:
    """The ``bbox_errors`` result dict of an :func:`sdconet.evaluation.errors.error_breakdown`."""
    res: OrderedDict = OrderedDict(AP50=float(errors["ap"]))
    for t in ERROR_TYPES:
        res[f"dAP_{t}"] = float(errors["dAP"][t])
    for t, v in errors["special"].items():
        res[f"dAP_{t}"] = float(v)
    for t in ERROR_TYPES:
        res[f"n_{t}"] = float(errors["counts"][t])
    return res


def flat_bbox_results(rep: Mapping[str, Any]) -> OrderedDict[str, float]:
    """The ``bbox`` result dict of an ``evaluate_coco`` report (headline, GT counts, per class x size)."""
    res: OrderedDict[str, float] = OrderedDict((k, float(v)) for k, v in rep["metrics"].items())
    res["nGT"] = float(rep["num_gt"])
    for b in rep["buckets"]:
        res[f"nGT{b['key']}"] = float(b["num_gt"])
    keys = ["all"] + [b["key"] for b in rep["buckets"]]
    for row in rep["per_class"]:
        name = row["name"]
        for k in keys:
            suffix = "" if k == "all" else k
            res[f"AP{suffix}-{name}"] = float(row["AP"][k])
        for k in keys:
            suffix = "" if k == "all" else k
            res[f"AR{suffix}-{name}"] = float(row["AR"][k])
        for k in keys:
            suffix = "" if k == "all" else k
            res[f"nGT{suffix}-{name}"] = float(row["num_gt"][k])
    return res


class ProtocolCOCOEvaluator(COCOEvaluator):
    """``COCOEvaluator`` (box task) scored under a chosen protocol, size buckets and frame.

    Args:
        dataset_name: a registered dataset (COCO json metadata or detectron2 dicts, as ``COCOEvaluator``).
        protocol: ``coco`` (every number at ``max_dets``) or ``mmdet`` (maxDets 100/300/1000: AP at 100, the rest
            at 1000).
        max_dets: headline maxDets of the ``coco`` protocol.
        area_ranges: ``coco`` (s/m/l) or ``aitod`` (vt/t/s/m) size buckets.
        frame: ``hr`` or ``lr``: the frame bucket sizes are measured in (label).
        frame_scale: GT-frame pixels per frame pixel (``s`` for ``lr`` with an x``s`` degradation, else 1).
        model_max_dets: detections the model keeps per image (for the maxDets note in the log and report).
        output_dir, distributed, use_fast_impl: as ``COCOEvaluator`` (fast = detectron2's C++ COCOeval).

        errors: also compute TIDE's error breakdown (``bbox_errors``), over the detections ``evaluate_coco`` scores
            at AP50 (the protocol's last maxDets per image).

    After :meth:`evaluate`, :attr:`last_report` holds the ``evaluate_coco`` report (main process),
    :attr:`last_errors` the error breakdown and :attr:`note` the maxDets note (or None).
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        protocol: str = "coco",
        max_dets: int = 100,
        area_ranges: str = "coco",
        frame: str = "hr",
        frame_scale: float = 1.0,
        model_max_dets: Optional[int] = None,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        use_fast_impl: bool = True,
        errors: bool = True,
    ) -> None:
        self.protocol = make_protocol(protocol, max_dets)
        self.errors = bool(errors)
        super().__init__(
            dataset_name,
            tasks=("bbox",),
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=self.protocol.max_dets[-1],
            use_fast_impl=use_fast_impl,
        )
        self.dataset_name = dataset_name
        self.area_ranges = area_ranges
        self.frame = frame
        self.frame_scale = float(frame_scale)
        self.note = max_dets_note(self.protocol, model_max_dets) if model_max_dets else None
        self.last_report: Optional[Dict[str, Any]] = None
        self.last_errors: Optional[Dict[str, Any]] = None

    def reset(self) -> None:
        super().reset()
        self.last_report = None
        self.last_errors = None

    def _eval_predictions(self, predictions, img_ids=None) -> None:
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            reverse = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
            for r in coco_results:
                if r["category_id"] not in reverse:
                    raise ValueError(
                        f"{self.dataset_name}: a prediction has class {r['category_id']}, but the dataset has "
                        f"{len(reverse)} classes (MODEL.SDCONET.NUM_CLASSES / ROI heads must match)"
                    )
                r["category_id"] = reverse[r["category_id"]]
        if self._output_dir:
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            os.makedirs(self._output_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(coco_results, f)
            logger.info("Saved %d detections to %s", len(coco_results), path)
        if not self._do_evaluation:
            logger.info("%s has no annotations: nothing to score", self.dataset_name)
            return
        rep = evaluate_coco(
            self._coco_api.dataset,
            coco_results,
            protocol=self.protocol,
            area_ranges=self.area_ranges,
            frame=self.frame,
            frame_scale=self.frame_scale,
            image_ids=img_ids,
            cocoeval_cls=COCOeval_opt if self._use_fast_impl else COCOeval,
        )
        self.last_report = rep
        logger.info("Evaluation of %s:\n%s", self.dataset_name, format_coco_tables(rep, note=self.note))
        self._results["bbox"] = flat_bbox_results(rep)
        if self.errors:
            self.last_errors = error_breakdown(
                self._coco_api.dataset, coco_results, max_dets=self.protocol.max_dets_rest, image_ids=img_ids
            )
            logger.info("%s", format_errors_table(self.last_errors))
            self._results["bbox_errors"] = flat_error_results(self.last_errors)


def build_evaluator(cfg, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
    """The evaluators of ``cfg`` for ``dataset_name``: :class:`ProtocolCOCOEvaluator` (``TEST.COCO_PROTOCOL``,
    ``TEST.COCO_MAX_DETS``, ``TEST.AREA_RANGES``, ``TEST.AREA_FRAME``) for any meta-architecture, +
    :class:`SREvaluator` when ``TEST.SR_EVAL.ENABLED`` and the model has an SR branch (wrapped in
    ``DatasetEvaluators`` when there are several).

    Args:
        cfg: a resolved config.
        dataset_name: one of ``DATASETS.TEST``.
        output_folder: where ``coco_instances_results.json`` goes (default ``OUTPUT_DIR/inference``).
    """
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluators: List[DatasetEvaluator] = [
        ProtocolCOCOEvaluator(
            dataset_name,
            protocol=cfg.TEST.COCO_PROTOCOL,
            max_dets=cfg.TEST.COCO_MAX_DETS,
            area_ranges=cfg.TEST.AREA_RANGES,
            frame=cfg.TEST.AREA_FRAME,
            frame_scale=area_frame_scale(cfg),
            model_max_dets=model_max_detections(cfg),
            output_dir=output_folder,
        )
    ]
    if cfg.TEST.SR_EVAL.ENABLED and not config_has_sr(cfg):
        logger.info("TEST.SR_EVAL.ENABLED ignored: the model has no SR branch")
    elif cfg.TEST.SR_EVAL.ENABLED:
        evaluators.append(
            SREvaluator(
                crop_border=cfg.TEST.SR_EVAL.CROP_BORDER,
                save=cfg.TEST.SR_EVAL.SAVE,
                save_dir=os.path.join(cfg.OUTPUT_DIR, "report", "sr"),
                prefix=dataset_name,
                image_format=cfg.INPUT.FORMAT,
            )
        )
    return DatasetEvaluators(evaluators) if len(evaluators) > 1 else evaluators[0]


def _leaves(evaluator) -> List[DatasetEvaluator]:
    if isinstance(evaluator, DatasetEvaluators):
        return list(itertools.chain(*[_leaves(e) for e in evaluator._evaluators]))
    return [evaluator]


def current_iteration() -> Optional[int]:
    """The training iteration of the active EventStorage (None outside training, e.g. ``--eval-only``)."""
    try:
        return int(get_event_storage().iter)
    except AssertionError:
        return None


def write_evaluation_report(
    cfg,
    evaluators: Mapping[str, DatasetEvaluator],
    results: Mapping[str, Mapping[str, Any]],
    *,
    iteration: Optional[int] = None,
    notes: Optional[Mapping[str, str]] = None,
) -> Optional[str]:
    """Write ``OUTPUT_DIR/report.md`` (+ ``report.json``, ``report/*.png``) from the evaluators of one
    ``SDCoNetTrainer.test`` call (main process only). Returns the Markdown path (None on other ranks).

    Args:
        cfg: the run's config.
        evaluators: ``{dataset name: the evaluator used}`` (their ``last_report``/``last_metrics`` are read).
        results: ``{dataset name: results dict}`` as returned by ``inference_on_dataset``.
        iteration: the iteration the model was evaluated at (None = a checkpoint evaluated with ``--eval-only``).
        notes: ``{key: sentence}`` for the Notes section.
    """
    if not comm.is_main_process():
        return None
    datasets: Dict[str, Dict[str, Any]] = {}
    for name, ev in evaluators.items():
        parts: Dict[str, Any] = {"coco": None}
        for leaf in _leaves(ev):
            if isinstance(leaf, ProtocolCOCOEvaluator):
                parts["coco"], parts["note"] = leaf.last_report, leaf.note
                parts["errors"] = leaf.last_errors
            elif isinstance(leaf, SREvaluator):
                sr = (results.get(name) or {}).get("sr")
                if sr:
                    parts["sr"] = dict(sr)
                parts["sr_images"] = [os.path.relpath(p, cfg.OUTPUT_DIR) for p in leaf.saved]
        datasets[name] = parts
    run = {
        "evaluated": (
            f"iteration {iteration} of {cfg.SOLVER.MAX_ITER}"
            if iteration is not None
            else f"checkpoint {cfg.MODEL.WEIGHTS or '(none)'} (--eval-only)"
        ),
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "metrics.json": "the same numbers as scalars bbox/..., sr/... (one line per evaluation)",
    }
    written = write_run_report(cfg.OUTPUT_DIR, datasets, run=run, notes=notes)
    logger.info("Evaluation report: %s", written["markdown"])
    return str(written["markdown"])


def append_metrics_json(output_dir: str, results: Mapping[str, Any], iteration: Optional[int]) -> str:
    """Append one line ``{"iteration": ..., "bbox/AP": ..., ...}`` (the flattened results, as the training's
    ``EvalHook`` stores them) to ``OUTPUT_DIR/metrics.json`` -- for ``--eval-only`` runs, which have no writer.
    ``iteration`` is the checkpoint's (-1 when unknown). Main process only; returns the path."""
    from detectron2.evaluation.testing import flatten_results_dict

    path = os.path.join(output_dir, "metrics.json")
    if comm.is_main_process():
        line = {"iteration": -1 if iteration is None else int(iteration)}
        line.update({k: float(v) for k, v in flatten_results_dict(dict(results)).items()})
        os.makedirs(output_dir, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return path
