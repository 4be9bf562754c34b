"""The whole-scene prediction loop: many scenes -> tiles -> fixed-size batches -> detector -> per-scene merge.

One :class:`SceneRunner` serves ``tools/predict.py`` and :func:`~sdconet.inference.scene.predict_scene`::

    scenes (SceneInput)                       reader thread (prefetch)                         main thread
    open -> plan -> read + degrade tiles  -->  batch_tiles (all scenes, fixed shape)  -->  detector.predict
                                                                                              |
    SceneResult / SceneFailure  <--  merge (border suppression + NMS/WBF)  <--  SceneAccumulator (per scene)

* Scenes are opened lazily in the reader thread; tiles of consecutive scenes share batches.
* A scene is finished (merged and yielded) as soon as its last tile is predicted; :attr:`SceneResult.raw` keeps
  the tile detections before merging (``merge=None`` skips the merge, e.g. when a scene's tiles are split over
  processes and merged after a gather; ``shard`` picks the tiles of this process).
* Tiles without any valid pixel (nodata everywhere, sources with ``read_with_mask``) are not predicted; they are
  counted (:attr:`SceneResult.skipped`, ``stats["num_skipped"]``). A plan without tasks finishes at once.
* A scene that cannot be opened, planned (e.g. smaller than the SR factor), read or predicted is yielded as a
  :class:`SceneFailure` naming it and the cause; the run goes on. A failing batch holding tiles of several scenes is
  retried scene by scene, so only the scene at fault fails.
* The source of a yielded scene stays open until the consumer asks for the next event (so it can draw on it).

Events are yielded in completion order (which is the input order unless a scene fails early).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .accumulator import RawTileDetections, SceneAccumulator, SceneDetections, merge_raw
from .batching import TileBatch, batch_tiles, prefetch
from .merge import MergeOptions
from .sources import SceneInput, SceneSource
from .tiling import ScenePlan, SkippedTile, TilingOptions, iter_tile_tasks, plan_scene

logger = logging.getLogger(__name__)

__all__ = ["SceneFailure", "SceneResult", "SceneRunner", "TileDetector"]


class TileDetector(Protocol):
    """What the runner needs from a model (a :class:`~sdconet.inference.predictor.Predictor`)."""

    batch_size: int

    @property
    def sr_scale(self) -> int: ...

    def predict(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """(h, w, 3) uint8 LR inputs -> per image ``boxes`` (k, 4) in its pixels, ``scores``, ``labels``.

        With the runner's ``pad_to`` the detector is called as ``predict(images, pad_to=(h, w))`` and must pad every
        input to that size.
        """
        ...


@dataclass
class SceneResult:
    """A finished scene.

    Attributes:
        index: position of the scene in the run's input.
        key: the scene's key (its path).
        source: the open source (valid until the consumer asks for the next event).
        plan: its tiles.
        raw: tile detections in scene pixels, before merging.
        detections: the merged detections (None when the runner does not merge); ``stats`` hold ``num_tiles``,
            ``num_raw``, ``num_border_cut``, ``num_merged``, ``seconds``.
        seconds: wall time from the scene's start to its merge.
        skipped: tiles of the plan not predicted because they hold no valid pixel (nodata).
    """

    index: int
    key: str
    source: SceneSource
    plan: ScenePlan
    raw: RawTileDetections
    detections: SceneDetections | None
    seconds: float
    skipped: int = 0


@dataclass
class SceneFailure:
    """A scene that could not be done.

    Attributes:
        index: position of the scene in the run's input.
        key: the scene's key (its path).
        stage: ``"open"``, ``"plan"``, ``"read"``, ``"predict"`` or ``"merge"``.
        error: the exception.
    """

    index: int
    key: str
    stage: str
    error: BaseException

    @property
    def reason(self) -> str:
        """One line: the cause without the key (the exception's message, or its type when it has none)."""
        text = str(self.error).strip().splitlines()
        return text[0] if text else type(self.error).__name__

    @property
    def message(self) -> str:
        return f"{self.key}: {self.stage} failed: {self.reason}"


@dataclass
class _Started:
    """Reader event: a scene was opened and planned; its tiles follow."""

    index: int
    key: str
    source: SceneSource
    plan: ScenePlan


class SceneRunner:
    """Predict many scenes with one detector (module docstring).

    Args:
        detector: a :class:`~sdconet.inference.predictor.Predictor` (or anything :class:`TileDetector`).
        tiling: :class:`~sdconet.inference.tiling.TilingOptions` of every scene.
        score_thresh: tile detections below this score are dropped before merging.
        merge: merging options, or None to yield raw tile detections only.
        batch_size: tiles per forward pass (default: the detector's).
        pad_to_tile: pad every input to the LR tile size (``tile_size // s``) with its padding mask.
        fixed_shape: also fill the last batch with dummy tiles, so that every forward pass has one shape (for a
            compiled model); implies ``pad_to_tile``; needs ``tile_size > 0``.
        prefetch: batches prepared ahead by the reader thread (0 = read in the main thread).
        shard: ``plan -> plan`` keeping only the tiles this process predicts (None = all).
        on_tiles: called with ``(scene index, number of tiles)`` after every batch (progress bars).
    """

    def __init__(
        self,
        detector: TileDetector,
        tiling: TilingOptions,
        *,
        score_thresh: float = 0.05,
        merge: MergeOptions | None = MergeOptions(),
        batch_size: int | None = None,
        pad_to_tile: bool = False,
        fixed_shape: bool = False,
        prefetch: int = 2,
        shard: Callable[[ScenePlan], ScenePlan] | None = None,
        on_tiles: Callable[[int, int], None] | None = None,
    ) -> None:
        self.detector = detector
        self.tiling = tiling
        self.score_thresh = float(score_thresh)
        self.merge = merge
        self.batch_size = int(batch_size or getattr(detector, "batch_size", 1) or 1)
        self.sr_scale = int(detector.sr_scale)
        self.fixed_shape = bool(fixed_shape)
        lr_tile = tiling.lr_tile(self.sr_scale)
        if (pad_to_tile or fixed_shape) and not lr_tile:
            raise ValueError("pad_to_tile / fixed_shape need a tile size > 0 (tile 0 has no fixed shape)")
        self.pad_to = (lr_tile, lr_tile) if (pad_to_tile or fixed_shape) else None
        self.prefetch = int(prefetch)
        self.shard = shard
        self.on_tiles = on_tiles

    # ------------------------------------------------------------------------------------------------ reading
    def _read(self, scenes: Iterable[SceneInput]) -> Iterator[Any]:
        """Reader side: scene events and tile tasks, in order (runs in the reader thread)."""
        for index, scene in enumerate(scenes):
            try:
                source = scene.open()
            except Exception as exc:  # noqa: BLE001 - one scene fails, the run goes on
                yield SceneFailure(index, scene.key, "open", exc)
                continue
            try:
                plan = plan_scene(source.width, source.height, self.sr_scale, self.tiling)
                if self.shard is not None:
                    plan = self.shard(plan)
            except Exception as exc:  # noqa: BLE001
                yield SceneFailure(index, scene.key, "plan", exc)
                source.close()
                continue
            yield _Started(index, scene.key, source, plan)
            tasks = iter_tile_tasks(source, plan, index)
            while True:
                try:
                    task = next(tasks)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001
                    yield SceneFailure(index, scene.key, "read", exc)
                    break
                yield task

    # ----------------------------------------------------------------------------------------------- predicting
    def _predict(self, images: list[np.ndarray], pad_to: tuple[int, int] | None) -> list[dict[str, Any]]:
        if pad_to is None:
            return self.detector.predict(images)
        return self.detector.predict(images, pad_to=pad_to)

    def _predict_batch(self, batch: TileBatch) -> tuple[list[tuple[Any, dict]], dict[int, BaseException]]:
        """``([(task, result)], {scene: error})``: a failing batch of several scenes is retried scene by scene."""
        try:
            results = self._predict(batch.images, batch.pad_to)
            return list(zip(batch.tasks, results)), {}
        except Exception as exc:  # noqa: BLE001
            scenes = sorted({t.scene for t in batch.tasks})
            if len(scenes) == 1:
                return [], {scenes[0]: exc}
        pairs, errors = [], {}
        for scene in scenes:
            tasks = [t for t in batch.tasks if t.scene == scene]
            images = [t.image for t in tasks]
            if self.fixed_shape:
                images += [np.zeros((*batch.pad_to, 3), np.uint8)] * (self.batch_size - len(images))
            try:
                pairs += list(zip(tasks, self._predict(images, batch.pad_to)))
            except Exception as exc:  # noqa: BLE001
                errors[scene] = exc
        return pairs, errors

    # ---------------------------------------------------------------------------------------------------- loop
    def run(self, scenes: Iterable[SceneInput | SceneSource]) -> Iterator[SceneResult | SceneFailure]:
        """Predict ``scenes`` (inputs to open, or open sources); yields one event per scene (module docstring)."""
        inputs = (s if isinstance(s, SceneInput) else SceneInput.from_source(s) for s in scenes)
        stream = batch_tiles(self._read(inputs), self.batch_size, self.pad_to, self.fixed_shape)
        events = prefetch(stream, self.prefetch)
        acc = SceneAccumulator(self.score_thresh)
        open_scenes: dict[int, _Started] = {}
        started_at: dict[int, float] = {}
        skipped: dict[int, int] = {}

        def finish_failure(failure: SceneFailure) -> SceneFailure:
            acc.drop(failure.index)
            started = open_scenes.pop(failure.index, None)
            if started is not None:
                started.source.close()
            logger.debug("%s", failure.message)
            return failure

        try:
            for item in events:
                if isinstance(item, _Started):
                    acc.start(item.index, item.plan)
                    open_scenes[item.index] = item
                    started_at[item.index] = time.perf_counter()
                    if item.plan.num_tasks == 0:  # e.g. no tile of this scene in this process's share
                        acc.drop(item.index)
                        yield from self._yield_finished(
                            item.index,
                            RawTileDetections.empty(),
                            open_scenes,
                            started_at,
                            skipped,
                            finish_failure,
                        )
                elif isinstance(item, SkippedTile):
                    skipped[item.scene] = skipped.get(item.scene, 0) + 1
                    raw = acc.skip(item.scene)
                    if raw is not None:
                        yield from self._yield_finished(
                            item.scene, raw, open_scenes, started_at, skipped, finish_failure
                        )
                elif isinstance(item, SceneFailure):
                    yield finish_failure(item)
                elif isinstance(item, TileBatch):
                    pairs, errors = self._predict_batch(item)
                    for scene, exc in errors.items():
                        if acc.is_active(scene):
                            yield finish_failure(SceneFailure(scene, open_scenes[scene].key, "predict", exc))
                    finished: list[tuple[int, RawTileDetections]] = []
                    counts: dict[int, int] = {}
                    for task, result in pairs:
                        counts[task.scene] = counts.get(task.scene, 0) + 1
                        raw = acc.add(task, result)
                        if raw is not None:
                            finished.append((task.scene, raw))
                    if self.on_tiles is not None:
                        for scene, n in counts.items():
                            self.on_tiles(scene, n)
                    for scene, raw in finished:
                        yield from self._yield_finished(
                            scene, raw, open_scenes, started_at, skipped, finish_failure
                        )
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
            for started in open_scenes.values():
                started.source.close()

    def _yield_finished(self, scene, raw, open_scenes, started_at, skipped, finish_failure):
        """Merge a scene whose last task is in and yield it (its source is closed when the consumer moves on)."""
        event = self._finish(open_scenes[scene], raw, started_at.pop(scene), skipped.pop(scene, 0))
        if isinstance(event, SceneFailure):
            yield finish_failure(event)
            return
        try:
            yield event
        finally:
            open_scenes.pop(scene).source.close()

    def _finish(
        self, started: _Started, raw: RawTileDetections, t0: float, skipped: int = 0
    ) -> SceneResult | SceneFailure:
        plan = started.plan
        detections = None
        try:
            if self.merge is not None:
                detections = merge_raw(raw, plan.width, plan.height, self.merge)
        except Exception as exc:  # noqa: BLE001
            return SceneFailure(started.index, started.key, "merge", exc)
        seconds = time.perf_counter() - t0
        if detections is not None:
            detections.stats = {"num_tiles": len(plan.tiles), "num_skipped": skipped, **detections.stats}
            detections.stats["seconds"] = seconds
        return SceneResult(
            started.index, started.key, started.source, plan, raw, detections, seconds, skipped
        )
