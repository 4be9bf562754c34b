"""A resumable, deterministic training stream: which samples form batch ``i``, and the augmentation seed of each.

The stream is the concatenation over epochs ``e = 0, 1, ...`` of a permutation of the dataset drawn from
``(seed, e)``. Global batch ``i`` is stream positions ``[i * B, (i + 1) * B)`` (``B`` = total batch over all
processes); rank ``r`` of ``W`` takes its ``B / W`` consecutive positions. Batch ``i`` is therefore a pure function of
``(seed, i)``: a run resumed at iteration ``i`` reads exactly the batches the uninterrupted run would have read, with
no sampler state to replay (:class:`StreamBatchSampler` only needs ``start_iter``).

Every sample carries the seed ``derive_seed(seed, position)`` of its stream position, and :class:`KeyedDataset`
runs the mapper (cropping, flipping, degrading) under :func:`sdconet.engine.determinism.seeded` with it: the
augmentation of a sample depends only on ``(seed, epoch, index)``, not on which data-loader worker draws it or how
many draws came before.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..engine.determinism import derive_seed, seeded

__all__ = ["KeyedDataset", "StreamBatchSampler"]


class StreamBatchSampler:
    """Infinite batch sampler over the deterministic stream (module docstring); a ``batch_sampler`` for
    ``torch.utils.data.DataLoader``.

    Args:
        size: number of samples in the dataset.
        batch_size: samples per batch of this process.
        seed: the run's seed (may be changed before iteration starts, e.g. restored from a checkpoint).
        rank, world_size: this process and the number of processes (the total batch is ``batch_size * world_size``).
        shuffle: permute every epoch (else the dataset order).
        start_iter: the first batch to yield (set on resume, before iteration starts).

    Yields:
        Lists of ``(dataset index, sample seed)``.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        start_iter: int = 0,
    ) -> None:
        if size < 1:
            raise ValueError(f"StreamBatchSampler: the dataset is empty (size {size})")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"StreamBatchSampler: bad batch_size/rank/world_size {batch_size}/{rank}/{world_size}"
            )
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = bool(shuffle)
        self.start_iter = int(start_iter)
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            perm = (
                np.random.default_rng(derive_seed(self.seed, "epoch", epoch)).permutation(self.size)
                if self.shuffle
                else np.arange(self.size)
            )
            self._perm = (epoch, perm)
        return self._perm[1]

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """This process's part of global batch ``iteration``: ``(index, sample seed)`` pairs."""
        total = self.batch_size * self.world_size
        start = iteration * total + self.rank * self.batch_size
        out = []
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, self.size)
            out.append((int(self._permutation(epoch)[offset]), derive_seed(self.seed, "sample", position)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in itertools.count(self.start_iter):
            yield self.batch(iteration)

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "start_iter": self.start_iter,
            "size": self.size,
            "world_size": self.world_size,
        }


class KeyedDataset:
    """Map-style dataset over ``(index, sample seed)`` keys: the mapper runs under that seed.

    Args:
        items: the dataset's records (e.g. detectron2 dataset dicts); each is deep-copied before mapping.
        map_fn: record -> training sample (e.g. a dataset mapper); returning None is not allowed (the stream has no
            retry, so that batch ``i`` stays a function of ``i``).
    """

    def __init__(self, items: Sequence[Any], map_fn: Callable[[Any], Any]) -> None:
        self.items = items
        self.map_fn = map_fn

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, sample_seed = key
        with seeded(sample_seed):
            out = self.map_fn(copy.deepcopy(self.items[index]))
        if out is None:
            raise ValueError(
                f"the mapper returned None for training sample {index}; exact resume needs a sample"
            )
        return out
