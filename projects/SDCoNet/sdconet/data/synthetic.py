"""Deterministic synthetic aerial-like demo data, written in exactly the split-dataset layout.

Each tile is its own source scene: textured ground (low-frequency colour blotches, fine grain and a
few faint road strips) with a handful of high-contrast objects of three classes:

* ``vehicle``: a filled rectangle with aspect ≈ 2:1, horizontal or vertical, reddish;
* ``plane``: a cross (fuselage, wings and a tail plane), near white;
* ``tank``: a filled disc, cyan-ish.

Object sides are drawn log-uniformly between ``min_object_size`` and ``max_object_size`` HR pixels
(defaults 8–60, i.e. 4–30 px after the ×2 degradation), fully inside the tile and non-overlapping, so a
tiny detector learns them in a few hundred CPU steps. Boxes are the tight bounding boxes of the drawn
pixels. Every image is generated from ``numpy.random.default_rng([seed, split, index])``, so the data
does not depend on the number of images requested before it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .atomic import atomic_write_json
from .layout import lr_image_root, split_paths, stats_paths
from .prepare import FORMAT_VERSION, write_split_outputs
from .records import SourceImage, SourceObject
from .scene_tiles import tile_scene, write_scene_tiles

logger = logging.getLogger(__name__)

SYNTHETIC_CLASSES = ("vehicle", "plane", "tank")
SPLIT_NAMES = ("train", "test")
PARAMS_FILE = "synthetic_params.json"
# Default split sizes: enough train tiles that the quick config sees new objects every epoch instead of memorising a
# few dozen, and a test split large enough (~120 objects) that its AP50 moves by a few points, not by ±5, between runs.
DEFAULT_NUM_TRAIN = 192
DEFAULT_NUM_TEST = 32

# Object colours (RGB) per shape; each object jitters them by up to ±COLOR_JITTER.
_COLORS = {"vehicle": (225, 45, 40), "plane": (245, 245, 240), "tank": (50, 205, 235)}
COLOR_JITTER = 12
# Ground palette (RGB): grass, dry soil, concrete, dark field.
_GROUND = ((92, 110, 70), (128, 112, 84), (118, 118, 112), (70, 82, 60))
_BLOTCH_CELLS = 6  # low-frequency texture: a 6×6 random grid upsampled to the tile
_GRAIN_STD = 5.0  # fine per-pixel grain (grey levels)
_PLACEMENT_TRIES = 60
_GAP = 2  # minimum free pixels between two objects


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.array(_GROUND[rng.integers(len(_GROUND))], dtype=np.float32)
    cells = (_BLOTCH_CELLS, _BLOTCH_CELLS)
    # Mostly brightness variation (shared by the channels), a little colour variation.
    blotch = rng.normal(0.0, 12.0, cells + (1,)) + rng.normal(0.0, 4.0, cells + (3,))
    blotch = blotch.astype(np.float32)
    img = base + cv2.resize(blotch, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 3))):  # faint roads: darker grey strips
        width = int(rng.integers(3, max(4, size // 12)))
        pos = int(rng.integers(0, size - width))
        shade = np.float32(rng.uniform(-25.0, -10.0))
        if rng.random() < 0.5:
            img[pos : pos + width] += shade
        else:
            img[:, pos : pos + width] += shade
    img += rng.normal(0.0, _GRAIN_STD, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _shape_mask(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one object, cropped to its tight extent."""
    if kind == "vehicle":
        short = max(2, int(round(side / 2)))
        mask = np.ones((short, side), dtype=bool)
        return mask.T if rng.random() < 0.5 else mask
    if kind == "plane":
        mask = np.zeros((side, side), dtype=bool)
        bar = max(2, int(round(side / 5)))
        mid = (side - bar) // 2
        mask[:, mid : mid + bar] = True  # fuselage
        wing_row = int(round(side * 0.3))
        mask[wing_row : wing_row + bar, :] = True  # wings
        tail = max(bar, int(round(side / 2.5)))
        t0 = (side - tail) // 2
        mask[side - bar :, t0 : t0 + tail] = True  # tail plane
        return mask
    if kind == "tank":
        yy, xx = np.mgrid[:side, :side]
        c = (side - 1) / 2.0
        return (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2.0) ** 2
    raise ValueError(f"unknown synthetic shape {kind!r}")


def render_synthetic_tile(
    rng: np.random.Generator,
    tile_size: int = 128,
    classes: Sequence[str] = SYNTHETIC_CLASSES,
    objects_per_tile: tuple[int, int] = (2, 6),
    min_object_size: int = 8,
    max_object_size: int = 60,
) -> tuple[np.ndarray, list[SourceObject]]:
    """Draw one synthetic tile.

    Args:
        rng: the random generator (consumed).
        tile_size: tile side in HR pixels.
        classes: class names; each must be one of ``vehicle``, ``plane``, ``tank`` (its shape).
        objects_per_tile: inclusive range of the number of objects attempted.
        min_object_size: smallest object side in HR pixels.
        max_object_size: largest object side in HR pixels (capped at the tile size).

    Returns:
        ``(image, objects)``: (tile_size, tile_size, 3) uint8 RGB and the objects' tight boxes.
    """
    if not 2 <= min_object_size <= max_object_size:
        raise ValueError(
            f"need 2 <= min_object_size <= max_object_size, got {min_object_size} and {max_object_size}"
        )
    image = _ground(rng, tile_size)
    occupied = np.zeros((tile_size, tile_size), dtype=bool)
    objects = []
    hi = min(max_object_size, tile_size - 2 * _GAP)
    for _ in range(int(rng.integers(objects_per_tile[0], objects_per_tile[1] + 1))):
        category = int(rng.integers(len(classes)))
        kind = classes[category]
        side = int(round(np.exp(rng.uniform(np.log(min_object_size), np.log(hi + 1)))))
        mask = _shape_mask(kind, min(max(side, min_object_size), hi), rng)
        h, w = mask.shape
        color = np.clip(np.array(_COLORS[kind]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255)
        for _ in range(_PLACEMENT_TRIES):
            y = int(rng.integers(_GAP, tile_size - h - _GAP + 1))
            x = int(rng.integers(_GAP, tile_size - w - _GAP + 1))
            if not occupied[y - _GAP : y + h + _GAP, x - _GAP : x + w + _GAP].any():
                break
        else:
            continue
        occupied[y : y + h, x : x + w] |= True
        image[y : y + h, x : x + w][mask] = color.astype(np.uint8)
        rows, cols = np.nonzero(mask)
        x1, y1 = x + cols.min(), y + rows.min()
        x2, y2 = x + cols.max() + 1, y + rows.max() + 1
        objects.append(SourceObject(box=(float(x1), float(y1), float(x2), float(y2)), category=category))
    return image, objects


def make_synthetic_split(
    out_dir: str | os.PathLike,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_test: int = DEFAULT_NUM_TEST,
    tile_size: int = 128,
    seed: int = 0,
    classes: Sequence[str] = SYNTHETIC_CLASSES,
    objects_per_tile: tuple[int, int] = (2, 6),
    min_object_size: int = 8,
    max_object_size: int = 60,
    lr_scale: int = 2,
    write_lr: bool = False,
) -> dict[str, str]:
    """Write the synthetic demo dataset (train/test tiles, COCO json, source lists, statistics).

    Args:
        out_dir: output root (see :mod:`sdconet.data.layout`).
        num_train: number of train tiles.
        num_test: number of test tiles.
        tile_size: HR tile side (LR side is ``tile_size // lr_scale``).
        seed: master seed.
        classes: class names (shapes ``vehicle``, ``plane``, ``tank``).
        objects_per_tile: inclusive range of objects attempted per tile.
        min_object_size: smallest object side in HR pixels.
        max_object_size: largest object side in HR pixels.
        lr_scale: degradation factor for the LR statistics (and LR copies).
        write_lr: also write LR copies of the tiles.

    Returns:
        Dict of paths, see :func:`synthetic_paths`.
    """
    params = _params(
        num_train=num_train,
        num_test=num_test,
        tile_size=tile_size,
        seed=seed,
        classes=classes,
        objects_per_tile=objects_per_tile,
        min_object_size=min_object_size,
        max_object_size=max_object_size,
        lr_scale=lr_scale,
        write_lr=write_lr,
    )
    out = Path(out_dir)
    counts = {"train": num_train, "test": num_test}
    scenes, splits = {}, {}
    for split_index, split in enumerate(SPLIT_NAMES):
        scenes[split], splits[split] = [], []
        _, image_root = split_paths(out, split)
        lr_root = lr_image_root(out, split, lr_scale) if write_lr else None
        for index in range(counts[split]):
            rng = np.random.default_rng([seed, split_index, index])
            image, objects = render_synthetic_tile(
                rng, tile_size, classes, objects_per_tile, min_object_size, max_object_size
            )
            name = f"{split}_{index:05d}"
            record = SourceImage(name, f"<synthetic>/{name}", objects, tile_size, tile_size, rel_path=name)
            scene = tile_scene(record, tile_size, tile_size, tile_size, 0)
            write_scene_tiles(image, scene, image_root, lr_root, lr_scale)
            scenes[split].append(scene)
            splits[split].append(record.image_id)
    settings = {"tile_size": tile_size, "overlap": 0, "lr_scale": lr_scale, "write_lr": write_lr}
    settings["seed"] = seed
    write_split_outputs(out, "sdconet_synthetic", tuple(classes), scenes, splits, settings, {})
    atomic_write_json(out / PARAMS_FILE, params, indent=1)  # written last: marks a complete dataset
    return synthetic_paths(out)


def _params(**values: Any) -> dict[str, Any]:
    """The generator parameters as stored in ``synthetic_params.json`` (tuples as lists)."""
    params = {n: (list(v) if isinstance(v, (tuple, list)) else v) for n, v in values.items()}
    params["format_version"] = FORMAT_VERSION
    return params


def synthetic_paths(root: str | os.PathLike) -> dict[str, str]:
    """Paths of a synthetic dataset.

    Returns:
        Dict with ``root``, ``train_json``, ``train_images``, ``test_json``, ``test_images``,
        ``stats_json`` and ``stats_md``.
    """
    paths = {"root": str(root)}
    for split in SPLIT_NAMES:
        paths[f"{split}_json"], paths[f"{split}_images"] = split_paths(root, split)
    paths["stats_json"], paths["stats_md"] = stats_paths(root)
    return paths


def default_synthetic_root() -> str:
    """Cache folder of the synthetic dataset.

    ``$SDCONET_SYNTHETIC_ROOT`` if set, else ``$SDCONET_DATASETS/sdconet_synthetic``, else
    ``<repo>/datasets/_cache/sdconet_synthetic`` in a source checkout, else
    ``~/.cache/sdconet/sdconet_synthetic``.
    """
    if os.environ.get("SDCONET_SYNTHETIC_ROOT"):
        return os.environ["SDCONET_SYNTHETIC_ROOT"]
    if os.environ.get("SDCONET_DATASETS"):
        return os.path.join(os.environ["SDCONET_DATASETS"], "sdconet_synthetic")
    repo = Path(__file__).resolve().parents[4]
    if (repo / "datasets").is_dir() and (repo / "projects" / "SDCoNet").is_dir():
        return str(repo / "datasets" / "_cache" / "sdconet_synthetic")
    return str(Path.home() / ".cache" / "sdconet" / "sdconet_synthetic")


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    try:
        return json.loads((root / PARAMS_FILE).read_text(encoding="utf-8")) == params
    except (OSError, ValueError):
        return False


def ensure_synthetic_dataset(root: str | os.PathLike | None = None, **kwargs: Any) -> dict[str, str]:
    """Generate the synthetic dataset once into ``root`` and return its paths (idempotent, race-safe).

    The dataset is built in a temporary sibling folder and renamed into place, so concurrent callers
    (e.g. pytest-xdist workers) never see a partial dataset; a loser of the race discards its copy. An
    existing folder generated with other parameters is replaced.

    Args:
        root: dataset folder; default :func:`default_synthetic_root`.
        **kwargs: parameters of :func:`make_synthetic_split` (sizes, seed, ...).

    Returns:
        Dict of paths, see :func:`synthetic_paths`.
    """
    root = Path(root if root is not None else default_synthetic_root())
    signature = inspect.signature(make_synthetic_split)
    defaults = {n: p.default for n, p in signature.parameters.items() if n != "out_dir"}
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise TypeError(f"unknown synthetic dataset parameters: {sorted(unknown)}")
    values = dict(defaults, **kwargs)
    params = _params(**values)
    if _is_complete(root, params):
        return synthetic_paths(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        make_synthetic_split(tmp, **values)
        for _ in range(3):
            try:
                os.rename(tmp, root)
                logger.info("synthetic dataset written to %s", root)
                break
            except OSError:
                if _is_complete(root, params):  # another process won the race
                    break
                stale = root.parent / f".{root.name}.stale-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(root, stale)  # set aside an outdated or partial dataset
                except OSError:
                    continue
                shutil.rmtree(stale, ignore_errors=True)
        else:
            raise RuntimeError(f"could not move the synthetic dataset into {root}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return synthetic_paths(root)
