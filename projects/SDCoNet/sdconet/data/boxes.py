"""Clean source boxes before tiling: clip to the image and drop degenerate ones, counting both."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SanitizedBoxes:
    """Result of :func:`sanitize_boxes`.

    Attributes:
        boxes: (n, 4) float64 ``x1, y1, x2, y2`` clipped to the image.
        keep: (n,) int64 indices of the input boxes that survived.
        num_clipped: boxes that extended outside the image and were clipped (and kept).
        num_dropped: boxes dropped because they were zero-area, inverted, non-finite or fully outside.
    """

    boxes: np.ndarray
    keep: np.ndarray
    num_clipped: int
    num_dropped: int


def sanitize_boxes(boxes: np.ndarray, width: int, height: int) -> SanitizedBoxes:
    """Clip boxes to ``[0, width] × [0, height]`` and drop those with no area left.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2`` in image pixels.
        width: image width.
        height: image height.

    Returns:
        :class:`SanitizedBoxes`. An inverted box (``x2 < x1`` or ``y2 < y1``) is dropped, never
        re-ordered: it usually means a wrong annotation format.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0.0, float(width))
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0.0, float(height))
    positive = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    not_inverted = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    ok = finite & positive & not_inverted
    changed = np.any(clipped != boxes, axis=1) & ok
    keep = np.nonzero(ok)[0].astype(np.int64)
    return SanitizedBoxes(
        boxes=clipped[keep],
        keep=keep,
        num_clipped=int(np.count_nonzero(changed)),
        num_dropped=int(np.count_nonzero(~ok)),
    )
