"""Read any common raster as 8-bit RGB, and write tiles atomically.

Conversion rules (applied by :func:`read_image_rgb`, so every tool sees the same pixels):

* **8-bit RGB** is returned unchanged. **Grayscale** (and 1-bit, palette, CMYK, ...) is converted to RGB
  (grey replicated to the three channels). **Alpha is dropped** (no compositing onto a background).
* **16-bit** (unsigned; signed values are clipped at 0) is mapped to 8 bits with ``uint16_scaling``:
  ``"full"`` (default) maps the full range linearly, ``round(v / 257)`` so 0 → 0 and 65535 → 255;
  ``"percentile"`` stretches the image's own 2nd–98th percentile (over all channels together, so the
  colour balance is kept) to 0–255 and clips. ``"full"`` is deterministic across tiles and images;
  ``"percentile"`` suits 11/12-bit sensors whose data would otherwise be nearly black.
* **Floating point** rasters: values are taken as reflectance in [0, 1] when the maximum is ≤ 1 (× 255),
  else as 0–255 values (clipped); ``"percentile"`` stretches them like 16-bit data.
* Rasters with more than four bands are refused (select the bands first); EXIF orientation is ignored,
  because annotations refer to the stored pixel grid.

JPEG files are decoded with Pillow, which detects truncated files (OpenCV silently returns grey rows);
everything else is decoded with OpenCV first (16-bit PNG/TIFF, multi-page TIFF's first page) and Pillow
as a fallback.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .atomic import atomic_write_bytes
from .errors import ImageReadError

UINT16_SCALINGS = ("full", "percentile")
# Percentiles stretched to 0 and 255 by uint16_scaling="percentile" (QGIS' "cumulative count cut" default).
PERCENTILE_RANGE = (2.0, 98.0)
# 65535 / 255: maps the full 16-bit range onto the full 8-bit range.
_UINT16_TO_UINT8 = 257.0
_JPEG_MAGIC = b"\xff\xd8\xff"


def _to_uint8(arr: np.ndarray, uint16_scaling: str, path: str) -> np.ndarray:
    """Map an (H, W[, C]) array of any numeric dtype to uint8 following the module rules."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if uint16_scaling not in UINT16_SCALINGS:
        raise ValueError(f"uint16_scaling must be one of {UINT16_SCALINGS}, got {uint16_scaling!r}")
    is_float = np.issubdtype(arr.dtype, np.floating)
    if not is_float and not np.issubdtype(arr.dtype, np.integer):
        raise ImageReadError(path, f"unsupported pixel type {arr.dtype}")
    data = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if uint16_scaling == "percentile":
        lo, hi = np.percentile(data, PERCENTILE_RANGE)
        if hi <= lo:
            hi = lo + 1.0
        out = (data - lo) * (255.0 / (hi - lo))
    elif is_float:
        out = data * 255.0 if data.size and data.max() <= 1.0 else data
    else:
        out = np.clip(data, 0.0, 65535.0) / _UINT16_TO_UINT8
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_rgb(arr: np.ndarray, path: str, bgr: bool) -> np.ndarray:
    """(H, W) or (H, W, C) with C in 1..4 → (H, W, 3); ``bgr`` says the channel order is OpenCV's."""
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3:
        raise ImageReadError(path, f"unexpected array shape {arr.shape}")
    channels = arr.shape[2]
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    if channels == 2:  # grey + alpha
        return np.repeat(arr[:, :, :1], 3, axis=2)
    if channels in (3, 4):
        rgb = arr[:, :, :3]
        return rgb[:, :, ::-1] if bgr else rgb
    raise ImageReadError(path, f"{channels} bands; select three bands (e.g. with gdal_translate -b) first")


def _decode_pil(data: bytes, path: str, uint16_scaling: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                arr = np.array(im)
            elif im.mode in ("RGB", "L"):
                arr = np.array(im)
            else:
                arr = np.array(im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB"))
    return _to_rgb(_to_uint8(arr, uint16_scaling, path), path, bgr=False)


def _decode_cv2(data: bytes, path: str, uint16_scaling: str) -> np.ndarray | None:
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        return None
    return _to_rgb(_to_uint8(arr, uint16_scaling, path), path, bgr=True)


def read_image_rgb(path: str | os.PathLike, uint16_scaling: str = "full") -> np.ndarray:
    """Read an image file as 8-bit RGB.

    Args:
        path: image file (JPEG, PNG, TIFF/GeoTIFF, BMP, ...).
        uint16_scaling: ``"full"`` or ``"percentile"``, how 16-bit and float rasters become 8-bit
            (see the module docstring).

    Returns:
        ``uint8`` array of shape (H, W, 3), RGB order, C-contiguous.

    Raises:
        ImageReadError: the file is missing, empty, corrupt, truncated or has an unsupported layout;
            the message names the path.
    """
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from exc
    if not data:
        raise ImageReadError(path, "empty file")
    errors = []
    decoders = (_decode_pil,) if data.startswith(_JPEG_MAGIC) else (_decode_cv2, _decode_pil)
    for decode in decoders:
        try:
            out = decode(data, path, uint16_scaling)
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, TypeError, cv2.error, Image.DecompressionBombError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if out is not None:
            return np.ascontiguousarray(out)
        errors.append("OpenCV could not decode it")
    raise ImageReadError(path, "; ".join(errors) or "unknown format")


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Read an image's ``(width, height)`` from its header without decoding the pixels.

    Raises:
        ImageReadError: the header cannot be read (the message names the path).
    """
    path = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
    except FileNotFoundError as exc:
        raise ImageReadError(path, "no such file") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        # Formats Pillow cannot parse (or huge rasters): decode fully as the fallback.
        height, width = read_image_rgb(path).shape[:2]
        return width, height


def encode_image(image: np.ndarray, ext: str, jpeg_quality: int = 95) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as ``ext`` (".png" or ".jpg") bytes.

    PNG uses OpenCV's default (fast) compression and is byte-for-byte deterministic.
    """
    ext = ext.lower()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode an image as {ext!r}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 RGB image atomically; the format follows the file extension."""
    atomic_write_bytes(path, encode_image(image, os.path.splitext(str(path))[1], jpeg_quality))
