"""Train/test division by SOURCE image, so overlapping tiles of one scene never fall on both sides."""

from __future__ import annotations

import random
from typing import Iterable, Sequence


def split_by_source(
    ids: Iterable[str],
    train_ratio: float = 0.7,
    seed: int = 0,
    split_names: Sequence[str] = ("train", "test"),
) -> dict[str, list[str]]:
    """Randomly divide source ids into two splits.

    The ids are sorted, shuffled with ``random.Random(seed)`` and the first ``round(train_ratio * n)`` go
    to the first split. The result depends only on the id set, the ratio and the seed.

    Args:
        ids: unique source image ids.
        train_ratio: fraction of sources in the first split, in [0, 1].
        seed: shuffle seed.
        split_names: the two split names.

    Returns:
        ``{split_names[0]: sorted ids, split_names[1]: sorted ids}``.
    """
    if not 0.0 <= train_ratio <= 1.0:
        raise ValueError(f"train_ratio must lie in [0, 1], got {train_ratio!r}")
    if len(split_names) != 2:
        raise ValueError(f"split_names must name two splits, got {split_names!r}")
    ordered = sorted(ids)
    if len(set(ordered)) != len(ordered):
        raise ValueError("source ids are not unique")
    shuffled = list(ordered)
    random.Random(seed).shuffle(shuffled)
    n_train = int(round(train_ratio * len(shuffled)))
    return {split_names[0]: sorted(shuffled[:n_train]), split_names[1]: sorted(shuffled[n_train:])}


def check_disjoint(splits: dict[str, Sequence[str]]) -> None:
    """Raise ``ValueError`` naming the id and both splits if a source id is in two splits."""
    owner: dict[str, str] = {}
    for name, ids in splits.items():
        for source_id in ids:
            if source_id in owner and owner[source_id] != name:
                raise ValueError(f"source {source_id!r} is in both split {owner[source_id]!r} and {name!r}")
            owner[source_id] = name
