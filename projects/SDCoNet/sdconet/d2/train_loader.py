"""The training data loader of the trainer: detectron2's dataset dicts, the resumable deterministic stream.

With ``DATALOADER.SAMPLER_TRAIN: TrainingSampler`` (detectron2's default) the loader is a ``torch`` DataLoader over
:class:`sdconet.data.sampling.KeyedDataset` with a :class:`sdconet.data.sampling.StreamBatchSampler`: batch ``i``
and the augmentation of each of its samples are functions of ``(seed, i)``, whatever the number of workers, so a run
resumed at iteration ``i`` reads exactly what the uninterrupted run would have read (exact resume). Batches are
formed in stream order: there is no aspect-ratio grouping (tiles are square; the model pads each batch anyway).
Other samplers (``RepeatFactorTrainingSampler``, ...) use detectron2's loader; their runs resume with the right
weights, optimizer and schedule but a restarted data order (a warning says so).
"""

from __future__ import annotations

import logging

import torch
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.utils import comm

from sdconet.data.sampling import KeyedDataset, StreamBatchSampler
from sdconet.engine.determinism import derive_seed

__all__ = ["build_resumable_train_loader", "stream_sampler_of"]

logger = logging.getLogger(__name__)


def _collate(batch):
    return batch  # detectron2's trivial_batch_collator: a list of dicts


def build_resumable_train_loader(cfg, mapper, seed: int):
    """The training loader (module docstring).

    Args:
        cfg: the run's config (``DATASETS.TRAIN``, ``DATALOADER.*``, ``SOLVER.IMS_PER_BATCH``).
        mapper: dataset dict -> model input (e.g. :class:`~sdconet.d2.mapper.SDCoNetDatasetMapper`).
        seed: the data seed (the resume hook replaces it by the checkpoint's before iteration starts).
    """
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        logger.warning(
            "DATALOADER.SAMPLER_TRAIN %s: detectron2's loader is used; --resume restores weights, optimizer and "
            "schedule but not the data order (exact resume needs TrainingSampler)",
            cfg.DATALOADER.SAMPLER_TRAIN,
        )
        return build_detection_train_loader(cfg, mapper=mapper)
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, min_keypoints=0
    )
    world = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % world:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes ({world})"
        )
    sampler = StreamBatchSampler(len(dicts), total // world, seed, rank=comm.get_rank(), world_size=world)
    return torch.utils.data.DataLoader(
        KeyedDataset(dicts, mapper),
        batch_sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=_collate,
        # the loader's own generator: starting its iterator never draws from the global torch RNG
        generator=torch.Generator().manual_seed(derive_seed(seed, "loader") & 0xFFFFFFFF),
    )


def stream_sampler_of(data_loader) -> StreamBatchSampler | None:
    """The :class:`StreamBatchSampler` of a loader built here, or None (another loader)."""
    sampler = getattr(data_loader, "batch_sampler", None)
    return sampler if isinstance(sampler, StreamBatchSampler) else None
