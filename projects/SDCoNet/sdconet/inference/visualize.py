"""Pictures of what the model sees and predicts, as (H, W, 3) uint8 RGB arrays (write them with
:func:`sdconet.data.image_io.write_image`, which is atomic).

* :func:`draw_detections`: boxes with class name and score, one colour per class, optional legend; same size as
  the input image.
* :func:`saliency_figure`: the image, then the saliency map of every detection level overlaid as a heat map
  (paper Fig. 1 / Fig. 7 style).
* :func:`sr_figure`: bicubic upsampling of the LR input, the SR output and (when known) the HR tile side by side;
  the panel titles give the PSNR against the HR tile.
* :func:`kept_tokens_figure`: one row per encoder layer, one column per level; tokens the layer updates are shown
  bright, the others dimmed.

Figures are grids of equal panels with a title band above each panel (:func:`grid_size` gives their exact size):
``width = cols * panel_w + (cols + 1) * pad``, ``height = rows * (panel_h + title_h) + (rows + 1) * pad``.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "class_colors",
    "draw_detections",
    "grid_size",
    "kept_tokens_figure",
    "panel_size",
    "psnr",
    "saliency_figure",
    "sr_figure",
    "bicubic_upscale",
]

#: Matplotlib's "tab10" colours (RGB): the first ten classes; later classes get golden-ratio hues.
_TAB10 = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
_GOLDEN = 0.618033988749895
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Panels smaller than this (pixels, longer side) are enlarged so titles and tokens stay readable.
MIN_PANEL = 256
TITLE_HEIGHT = 28
PAD = 6
BACKGROUND = (255, 255, 255)
#: Brightness of tokens a layer does not update in :func:`kept_tokens_figure`.
DIMMED = 0.25
#: Weight of the heat map in :func:`saliency_figure`.
HEAT_ALPHA = 0.55


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One distinct RGB colour per class (deterministic)."""
    colors = list(_TAB10[:num_classes])
    for k in range(len(colors), num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * _GOLDEN) % 1.0, 0.85, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of the same shape (8-bit peak 255; ``inf`` when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _text_color(rgb: Sequence[int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _label(canvas: np.ndarray, text: str, x: int, y: int, color, scale: float, thickness: int) -> None:
    """Filled label box whose bottom-left corner is (x, y), kept inside the canvas."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    h, w = canvas.shape[:2]
    x = int(min(max(x, 0), max(w - tw - 2, 0)))
    y = int(min(max(y, th + base + 2), h))
    cv2.rectangle(canvas, (x, y - th - base - 2), (x + tw + 2, y), tuple(int(c) for c in color), -1)
    cv2.putText(canvas, text, (x + 1, y - base - 1), FONT, scale, _text_color(color), thickness, cv2.LINE_AA)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.0,
    thickness: int | None = None,
    show_labels: bool = True,
    legend: bool = True,
) -> np.ndarray:
    """Draw boxes on a copy of ``image``.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) ``x1, y1, x2, y2`` in the image's pixels.
        labels: (N,) class indices.
        scores: (N,) or None.
        class_names: names for the labels and legend (default ``class_<i>``).
        score_thresh: boxes below this score are not drawn.
        thickness: line width (default: 1 px per 1000 px of the longer side, at least 1).
        show_labels: write ``name score`` above each box.
        legend: list the classes with their colours (and box counts) in the top-left corner.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_detections: image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    canvas = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = np.ones(len(labels)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    num_classes = max(int(labels.max()) + 1 if len(labels) else 0, len(class_names or ()))
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
    names += [f"class_{i}" for i in range(len(names), num_classes)]
    colors = class_colors(max(num_classes, 1))
    h, w = canvas.shape[:2]
    thickness = thickness or max(1, round(max(h, w) / 1000))
    font_scale = 0.3 + 0.1 * thickness
    shown = scores >= score_thresh
    for k in np.argsort(scores, kind="stable"):  # best boxes drawn last (on top)
        if not shown[k]:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[k])
        color = colors[labels[k]]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        if show_labels:
            _label(canvas, f"{names[labels[k]]} {scores[k]:.2f}", x1, y1 - 1, color, font_scale, 1)
    if legend and num_classes:
        counts = np.bincount(labels[shown], minlength=num_classes)
        scale = font_scale * 1.6
        (_, th), base = cv2.getTextSize("Ag", FONT, scale, 1)
        row = th + base + 6
        y = row + 4
        for c in range(num_classes):
            _label(canvas, f"{names[c]}: {counts[c]}", 6, y, colors[c], scale, 1 + (thickness > 1))
            y += row
    return canvas


# ---------------------------------------------------------------------------------------------------- figures
def panel_size(height: int, width: int, min_panel: int = MIN_PANEL) -> tuple[int, int]:
    """Display size ``(h, w)`` of a panel showing an image of ``height x width`` (enlarged by an integer factor to
    reach ``min_panel`` on the longer side)."""
    factor = max(1, math.ceil(min_panel / max(height, width)))
    return height * factor, width * factor


def grid_size(
    rows: int, cols: int, panel_hw: tuple[int, int], pad: int = PAD, title_h: int = TITLE_HEIGHT
) -> tuple[int, int]:
    """``(height, width)`` of a figure of ``rows x cols`` panels (see the module docstring)."""
    ph, pw = panel_hw
    return rows * (ph + title_h) + (rows + 1) * pad, cols * pw + (cols + 1) * pad


def _fit_text(text: str, width: int, height: int) -> tuple[float, int]:
    scale = height / 40.0
    while scale > 0.25 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width - 4:
        scale *= 0.9
    return scale, 1


def _grid(panels: Sequence[np.ndarray], titles: Sequence[str], cols: int) -> np.ndarray:
    """Equal-size panels in a grid with a title band above each (module docstring layout)."""
    ph, pw = panels[0].shape[:2]
    rows = math.ceil(len(panels) / cols)
    out_h, out_w = grid_size(rows, cols, (ph, pw))
    canvas = np.full((out_h, out_w, 3), BACKGROUND, dtype=np.uint8)
    for k, (panel, title) in enumerate(zip(panels, titles)):
        r, c = divmod(k, cols)
        y = PAD + r * (ph + TITLE_HEIGHT + PAD)
        x = PAD + c * (pw + PAD)
        scale, thick = _fit_text(title, pw, TITLE_HEIGHT)
        (tw, th), _ = cv2.getTextSize(title, FONT, scale, thick)
        tx = x + max(0, (pw - tw) // 2)
        cv2.putText(
            canvas, title, (tx, y + (TITLE_HEIGHT + th) // 2), FONT, scale, (0, 0, 0), thick, cv2.LINE_AA
        )
        canvas[y + TITLE_HEIGHT : y + TITLE_HEIGHT + ph, x : x + pw] = panel
    return canvas


def _resize(image: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if image.shape[:2] == tuple(hw):
        return image
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_CUBIC if hw[0] > image.shape[0] else cv2.INTER_AREA)
    return cv2.resize(image, (hw[1], hw[0]), interpolation=interp)


def _heat(values: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """[0, 1] map -> (h, w, 3) RGB jet heat map, bilinearly resized."""
    v = cv2.resize(np.clip(values, 0, 1).astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.applyColorMap(np.round(v * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]


def _level_name(level: int) -> str:
    return f"level {level + 1} (1/{8 * 2**level})"


def saliency_figure(
    image: np.ndarray, saliency: Sequence[np.ndarray], alpha: float = HEAT_ALPHA
) -> np.ndarray:
    """The image and one heat-map overlay per detection level, in a row.

    Args:
        image: (H, W, 3) uint8 RGB: the LR input or the HR tile it came from (maps are stretched over it).
        saliency: per level (finest first) (h_l, w_l) maps in [0, 1], covering the whole image.
        alpha: heat-map weight.

    Returns:
        uint8 RGB of size ``grid_size(1, 1 + L, panel_size(H, W))``.
    """
    hw = panel_size(*image.shape[:2])
    base = _resize(image, hw)
    panels = [base]
    titles = ["input"]
    for level, m in enumerate(saliency):
        blend = (1 - alpha) * base.astype(np.float32) + alpha * _heat(m, hw).astype(np.float32)
        panels.append(np.clip(np.round(blend), 0, 255).astype(np.uint8))
        titles.append(f"saliency {_level_name(level)} max {float(np.max(m)) if m.size else 0:.2f}")
    return _grid(panels, titles, cols=len(panels))


def bicubic_upscale(lr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The bicubic baseline of SR: (h, w, 3) uint8 LR image resized to ``hw`` = (H, W) with OpenCV's bicubic
    (Keys a = -0.75, pixel centres aligned), uint8."""
    return cv2.resize(lr, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)


def sr_figure(lr: np.ndarray, sr: np.ndarray, hr: np.ndarray | None = None) -> np.ndarray:
    """Bicubic ×s of the LR input | SR output | HR tile (when given), PSNR against HR in the titles.

    Args:
        lr: (h, w, 3) uint8 LR model input.
        sr: (s*h, s*w, 3) uint8 SR output.
        hr: (>= s*h, >= s*w, 3) uint8 HR tile (cropped to the SR size), or None (native inputs have no HR).

    Returns:
        uint8 RGB of size ``grid_size(1, 3 or 2, panel_size(s*h, s*w))``.
    """
    sh, sw = sr.shape[:2]
    bicubic = bicubic_upscale(lr, (sh, sw))
    scale = sh // max(lr.shape[0], 1)
    panels, titles = [bicubic, sr], [f"bicubic x{scale}", f"SR x{scale}"]
    if hr is not None:
        hr = hr[:sh, :sw]
        if hr.shape[:2] != (sh, sw):
            raise ValueError(f"sr_figure: HR tile {hr.shape[:2]} is smaller than the SR output {(sh, sw)}")
        titles = [f"{t}: PSNR {psnr(p, hr):.2f} dB" for t, p in zip(titles, panels)]
        panels.append(hr)
        titles.append("HR (ground truth)")
    hw = panel_size(sh, sw)
    return _grid([_resize(p, hw, nearest=True) for p in panels], titles, cols=len(panels))


def kept_tokens_figure(image: np.ndarray, kept: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Which tokens each encoder layer updates: rows = layers, columns = levels.

    Args:
        image: (H, W, 3) uint8 RGB (LR input or its HR tile; the token grids are stretched over it).
        kept: per layer, per level (finest first) (h_l, w_l) bool maps.

    Returns:
        uint8 RGB of size ``grid_size(layers, levels, panel_size(H, W))``.
    """
    hw = panel_size(*image.shape[:2])
    base = _resize(image, hw).astype(np.float32)
    panels, titles = [], []
    for layer, levels in enumerate(kept):
        for level, mask in enumerate(levels):
            up = _resize(mask.astype(np.uint8), hw, nearest=True).astype(np.float32)[:, :, None]
            panels.append(np.round(base * (DIMMED + (1 - DIMMED) * up)).astype(np.uint8))
            share = float(mask.mean()) if mask.size else 0.0
            titles.append(f"layer {layer + 1}, {_level_name(level)}: {100 * share:.0f}% kept")
    cols = max(len(levels) for levels in kept)
    return _grid(panels, titles, cols=cols)
