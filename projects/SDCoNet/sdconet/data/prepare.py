"""Turn a :class:`SourceDataset` into a split dataset on disk (tiles + COCO json + statistics).

Parallel over source images (``workers`` processes, ``spawn`` start method), deterministic (results are
collected in source order whatever the worker count), idempotent (identical bytes on a re-run; every
file is written atomically) and robust: an unreadable or truncated image is reported with its path,
skipped and counted, never a crash half way through. ``dry_run=True`` runs the same code path without
decoding pixels or writing anything (sizes come from the image headers) and returns the same COCO
dictionaries and statistics.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from .atomic import atomic_write_json, atomic_write_text
from .bands import parse_bands
from .coco_format import build_scenes_coco, build_tiles_coco
from .errors import DatasetGuardError, ImageReadError
from .image_io import read_image_rgb, read_image_size
from .layout import lr_image_root, scenes_json_path, sources_path, split_paths, stats_paths
from .records import SourceDataset, SourceImage
from .scaling import DEFAULT_SCALING, check_scaling
from .scene_tiles import SceneTiles, tile_scene, write_scene_tiles
from .split import check_disjoint
from .staging import StagedFiles, recover_staged
from .stats import coco_split_stats, stats_markdown, total_stats
from .tiler import DEFAULT_MIN_VISIBLE, window_starts

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: A run may replace an existing dataset only when it keeps at least this fraction of its source images.
MIN_KEPT_FRACTION = 0.5


@dataclass(frozen=True)
class TilingOptions:
    """How tiles are cut and stored.

    Attributes:
        tile_size: tile side in HR pixels.
        overlap: overlap of neighbouring windows in pixels.
        min_visible: a cut object is kept when its visible fraction is > this.
        pad: zero-pad tiles of scenes smaller than a tile up to ``tile_size``.
        keep_empty: keep tiles without objects (the paper's counts include them).
        image_ext: ``".png"`` (lossless, default) or ``".jpg"``.
        jpeg_quality: quality of ``.jpg`` tiles.
        lr_scale: degradation factor used for the LR statistics and the optional LR copies.
        write_lr: also write LR copies of every tile (``<split>/images_lr_x<scale>``).
        scaling: how 16-bit / float rasters become 8-bit (:mod:`sdconet.data.scaling`; the same function and
            default as ``tools/predict.py --scaling``).
        bands: 1-based bands shown as R, G, B (:mod:`sdconet.data.bands`), or None for the default rule.
    """

    tile_size: int = 512
    overlap: int = 200
    min_visible: float = DEFAULT_MIN_VISIBLE
    pad: bool = True
    keep_empty: bool = True
    image_ext: str = ".png"
    jpeg_quality: int = 95
    lr_scale: int = 2
    write_lr: bool = False
    scaling: str = DEFAULT_SCALING
    bands: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        window_starts(self.tile_size, self.tile_size, self.overlap)  # validates tile_size and overlap
        if not 0.0 <= self.min_visible <= 1.0:
            raise ValueError(f"min_visible must lie in [0, 1], got {self.min_visible!r}")
        if self.image_ext.lower() not in (".png", ".jpg", ".jpeg"):
            raise ValueError(f"image_ext must be .png or .jpg, got {self.image_ext!r}")
        if self.lr_scale < 1:
            raise ValueError(f"lr_scale must be >= 1, got {self.lr_scale!r}")
        check_scaling(self.scaling)
        if self.bands is not None:
            object.__setattr__(self, "bands", parse_bands(self.bands))


@dataclass
class SceneOutcome:
    """What a worker reports for one source image (no pixels)."""

    split: str
    image_id: str
    scene: SceneTiles | None = None
    error: str | None = None
    written: int = 0
    size_mismatch: bool = False


@dataclass
class PrepareResult:
    """Return value of :func:`prepare_split_dataset`.

    Attributes:
        stats: the statistics dict (also written to ``stats.json``).
        coco: split → tile COCO dict (also written as ``annotations/instances_<split>.json``).
        failed: ``(path, reason)`` of every source image that could not be read.
        written: number of image files written.
    """

    stats: dict[str, Any]
    coco: dict[str, dict[str, Any]]
    failed: list[tuple[str, str]] = field(default_factory=list)
    written: int = 0


def _process(task: tuple[str, SourceImage, TilingOptions, str | None, bool]) -> SceneOutcome:
    """Worker: read one scene, tile it and (unless ``out`` is None) write its tiles."""
    split, record, opts, out, skip_existing = task
    outcome = SceneOutcome(split, record.image_id)
    try:
        if out is None:
            width, height = read_image_size(record.path)
            image = None
        else:
            image = read_image_rgb(record.path, opts.scaling, opts.bands)
            height, width = image.shape[:2]
    except ImageReadError as exc:
        outcome.error = str(exc)
        return outcome
    if record.width is not None and record.height is not None:
        outcome.size_mismatch = (record.width, record.height) != (width, height)
    scene = tile_scene(
        record,
        width,
        height,
        opts.tile_size,
        opts.overlap,
        opts.min_visible,
        opts.pad,
        opts.keep_empty,
        opts.image_ext,
    )
    if image is not None:
        _, image_root = split_paths(out, split)
        lr_root = lr_image_root(out, split, opts.lr_scale) if opts.write_lr else None
        outcome.written = write_scene_tiles(
            image, scene, image_root, lr_root, opts.lr_scale, skip_existing, opts.jpeg_quality
        )
    outcome.scene = scene
    return outcome


def _init_worker() -> None:
    # One thread per worker process: the parallelism is over images.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)


def parallel_map(
    fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int = 1, desc: str = "", progress: bool = True
) -> Iterator[Any]:
    """Ordered map over ``tasks`` in ``workers`` spawned processes (in-process when ``workers <= 1``)."""
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, unit="img", dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield fn(task)
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            chunk = max(1, min(16, len(tasks) // (workers * 8)))
            with ctx.Pool(workers, initializer=_init_worker) as pool:
                for result in pool.imap(fn, tasks, chunksize=chunk):
                    yield result
                    bar.update()
    finally:
        bar.close()


def _stale_files(folder: str, expected: Iterable[str]) -> int:
    if not os.path.isdir(folder):
        return 0
    expected = set(expected)
    return sum(1 for name in os.listdir(folder) if not name.startswith(".") and name not in expected)


def prepare_split_dataset(
    dataset: SourceDataset,
    out_dir: str | os.PathLike | None,
    splits: dict[str, Sequence[str]],
    options: TilingOptions = TilingOptions(),
    workers: int = 1,
    skip_existing: bool = False,
    progress: bool = True,
    split_info: dict[str, Any] | None = None,
    force: bool = False,
) -> PrepareResult:
    """Tile ``dataset`` into the splits given and write the split-dataset layout.

    Args:
        dataset: the parsed source dataset.
        out_dir: output root (see :mod:`sdconet.data.layout`), or None for a dry run that only counts.
        splits: split name → source ids (must be disjoint; every id must exist in ``dataset``).
        options: :class:`TilingOptions`.
        workers: worker processes (1 = in-process).
        skip_existing: do not rewrite tile files that exist (resume); json/stats are always rewritten.
        progress: show a tqdm bar.
        split_info: how the split was made (seed, ratio or "official"), recorded in the statistics.
        force: replace an existing dataset even with fewer than half its source images (or write an empty one).

    Returns:
        :class:`PrepareResult`.

    Raises:
        DatasetGuardError: no source image exists (or none could be read), or ``out_dir`` holds a dataset of which
            this run would keep fewer than half the source images, and ``force`` is not given. Raised before any
            file is written (or, when the images turn out unreadable, before the metadata is replaced).
    """
    check_disjoint(splits)
    by_id = {im.image_id: im for im in dataset.images}
    missing = [i for ids in splits.values() for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} split ids are not in dataset {dataset.name!r}, e.g. {missing[0]!r}")
    out = None if out_dir is None else str(out_dir)
    tasks = [
        (split, by_id[i], options, out, skip_existing) for split, ids in splits.items() for i in sorted(ids)
    ]
    if out is not None:
        recover_staged(out)
    records = [t[1] for t in tasks]
    missing_files = [r.path for r in records if not os.path.isfile(r.path)]
    absent = [f"{p!r} does not exist" for p in missing_files]
    check_replacement(out, len(records), len(records) - len(missing_files), absent, force, "exist")
    scenes: dict[str, list[SceneTiles]] = {split: [] for split in splits}
    failed: list[tuple[str, str]] = []
    written = 0
    issues = dict(dataset.issues)
    for key in (
        "unreadable_images",
        "size_mismatch",
        "boxes_clipped",
        "boxes_dropped",
        "objects_cut_dropped",
    ):
        issues.setdefault(key, 0)
    desc = f"{dataset.name} {'count' if out is None else 'tile'}"
    for outcome in parallel_map(_process, tasks, workers, desc, progress):
        if outcome.error is not None:
            logger.warning("skipped: %s", outcome.error)
            failed.append((by_id[outcome.image_id].path, outcome.error))
            issues["unreadable_images"] += 1
            continue
        scene = outcome.scene
        scenes[outcome.split].append(scene)
        written += outcome.written
        issues["size_mismatch"] += int(outcome.size_mismatch)
        issues["boxes_clipped"] += scene.num_clipped
        issues["boxes_dropped"] += scene.num_dropped
        issues["objects_cut_dropped"] += scene.num_cut_dropped

    done = sum(len(v) for v in scenes.values())
    check_replacement(out, len(records), done, [reason for _, reason in failed], force, "could be read")
    settings = asdict(options)
    settings.pop("jpeg_quality")
    settings.update(split_info or {})
    stats, coco = write_split_outputs(
        out, dataset.name, dataset.class_names, scenes, splits, settings, issues, failed, dataset.messages
    )
    return PrepareResult(stats=stats, coco=coco, failed=failed, written=written)


def existing_source_count(out: str | os.PathLike | None) -> int:
    """Source images of the split dataset already in ``out`` (lines of its ``<split>_sources.txt``)."""
    if out is None or not os.path.isdir(out):
        return 0
    total = 0
    for name in sorted(os.listdir(out)):
        if name.endswith("_sources.txt") and os.path.isfile(os.path.join(out, name)):
            with open(os.path.join(out, name), encoding="utf-8", errors="replace") as f:
                total += sum(1 for line in f if line.strip())
    return total


def check_replacement(
    out: str | os.PathLike | None,
    listed: int,
    usable: int,
    unusable: Sequence[str],
    force: bool,
    verb: str,
) -> None:
    """Refuse a run that has no usable source image, or would replace a dataset with fewer than half its sources.

    Args:
        out: the output folder (None: a dry run; only the "no usable source" rule applies).
        listed: source images the run was given.
        usable: how many of them exist (before the run) or could be read (after it).
        unusable: why the others are unusable (the first is named, e.g. "'a.png' does not exist").
        force: skip the checks.
        verb: ``"exist"`` or ``"could be read"``, for the message.

    Raises:
        DatasetGuardError: see :func:`prepare_split_dataset`.
    """
    if force:
        return
    example = f" (e.g. {unusable[0]})" if unusable else ""
    nothing = (
        "nothing was written"
        if verb == "exist"
        else "the dataset's json files, stats and source lists were not replaced"
    )
    if listed == 0:
        raise DatasetGuardError(
            "no source images found: check the source arguments (--src, --json, --image-root, --splits); "
            f"{nothing}; --force writes an empty dataset"
        )
    if usable == 0:
        raise DatasetGuardError(
            f"no usable source images: none of the {listed} source images {verb}{example}; check the source "
            f"arguments (--src, --image-root); {nothing}"
        )
    existing = existing_source_count(out)
    if existing and usable < MIN_KEPT_FRACTION * existing:
        raise DatasetGuardError(
            f"{str(out)!r} holds a dataset of {existing} source images, but only {usable} of the {listed} source "
            f"images of this run {verb}{example}: it would replace the dataset with fewer than half of its "
            f"sources; {nothing}. Check the source arguments, or pass --force to replace it anyway"
        )


def write_split_outputs(
    out: str | os.PathLike | None,
    dataset_name: str,
    class_names: Sequence[str],
    scenes: dict[str, list[SceneTiles]],
    splits: dict[str, Sequence[str]],
    settings: dict[str, Any],
    issues: dict[str, int],
    failed: Sequence[tuple[str, str]] = (),
    messages: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Build (and unless ``out`` is None, write) the json files, source lists and statistics.

    Args:
        out: output root, or None to only build the dictionaries.
        dataset_name: recorded in the json ``info`` and the statistics.
        class_names: category names (ids 1..K).
        scenes: split → tiled scenes in source order.
        splits: split → source ids (written to ``<split>_sources.txt``).
        settings: tiling settings recorded in the json ``info`` and the statistics (``lr_scale`` is
            used for the LR size buckets).
        issues: problem counters recorded in the statistics.
        failed: ``(path, reason)`` of unreadable images.
        messages: reader messages recorded in the statistics.

    Returns:
        ``(stats, coco)`` with ``coco`` = split → tile COCO dict.
    """
    staged = StagedFiles(out) if out is not None else None
    try:
        stats, coco = _build_split_outputs(
            staged, out, dataset_name, class_names, scenes, splits, settings, issues, failed, messages
        )
    except BaseException:
        if staged is not None:
            staged.abort()
        raise
    if staged is not None:
        staged.commit()
    return stats, coco


def _build_split_outputs(
    staged: StagedFiles | None,
    out: str | os.PathLike | None,
    dataset_name: str,
    class_names: Sequence[str],
    scenes: dict[str, list[SceneTiles]],
    splits: dict[str, Sequence[str]],
    settings: dict[str, Any],
    issues: dict[str, int],
    failed: Sequence[tuple[str, str]],
    messages: Sequence[str],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    lr_scale = int(settings.get("lr_scale", 2))
    info_base = {"description": f"{dataset_name} split by sdconet.data", "format_version": FORMAT_VERSION}
    coco, per_split = {}, {}
    for split, split_scenes in scenes.items():
        names = [t.file_name for s in split_scenes for t in s.tiles]
        if len(set(names)) != len(names):
            raise ValueError(f"tile file names collide in split {split!r}; source ids differ only in symbols")
        info = {**info_base, **settings, "dataset": dataset_name, "split": split}
        coco[split] = build_tiles_coco(split_scenes, class_names, info)
        per_split[split] = coco_split_stats(coco[split], lr_scale)
        if staged is not None:
            json_path, image_root = split_paths(out, split)
            atomic_write_json(staged.path(json_path), coco[split])
            atomic_write_json(
                staged.path(scenes_json_path(out, split)), build_scenes_coco(split_scenes, class_names, info)
            )
            atomic_write_text(
                staged.path(sources_path(out, split)), "".join(f"{i}\n" for i in sorted(splits[split]))
            )
            stale = _stale_files(image_root, names)
            if stale:
                logger.warning(
                    "%s: %d files are not referenced by %s (left from an earlier run?)",
                    image_root,
                    stale,
                    json_path,
                )
    stats = {
        "dataset": dataset_name,
        "classes": list(class_names),
        "settings": dict(settings),
        "splits": per_split,
        "total": total_stats(per_split),
        "issues": dict(sorted(issues.items())),
        "failed_images": [{"path": p, "reason": r} for p, r in failed],
        "reader_messages": list(messages),
    }
    if staged is not None:
        json_stats, md_stats = stats_paths(out)
        atomic_write_json(staged.path(json_stats), stats, indent=1)
        atomic_write_text(staged.path(md_stats), stats_markdown(stats))
    return stats, coco
