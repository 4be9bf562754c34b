"""Read any common raster as 8-bit RGB, and write tiles atomically.

Conversion rules (applied by :func:`read_image_rgb`, so every tool sees the same pixels):

* **Bands** follow the one band rule of :mod:`sdconet.data.bands` (``bands=`` / ``--bands`` chooses them; more than
  4 bands, or bands without an RGB colour interpretation, need it; never a silent choice). 8-bit RGB is returned
  unchanged; **grayscale** is replicated to RGB; palette images are expanded; **alpha is dropped** (PNG/JPEG:
  no compositing; TIFF: alpha 0 and the GDAL nodata value mark invalid pixels, returned as 0 like the rasterio
  reader does).
* **16-bit and float** data become 8 bits with the one scaling function of :mod:`sdconet.data.scaling`
  (``scaling="percentile"`` by default: per-band 2-98 % stretch; ``"full"``: ``v / 257``; ``"none"``), with
  statistics computed once per image.
* EXIF orientation is ignored, because annotations refer to the stored pixel grid.

TIFF files are decoded with tifffile (any band count, band interpretation from the photometric and extra-samples
tags, GDAL's nodata tag), falling back to rasterio (when installed) or OpenCV for compressions tifffile cannot decode
without ``imagecodecs``. JPEG files are decoded with Pillow, which detects truncated files (OpenCV silently returns
grey rows); everything else is decoded with OpenCV first (16-bit PNG) and Pillow as a fallback.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .atomic import atomic_write_bytes
from .bands import BandChoice, choose_bands, valid_pixels
from .errors import ImageReadError
from .scaling import DEFAULT_SCALING, SCALINGS, check_scaling, scaling_for_array

#: Accepted ``scaling`` values (kept under its old name for callers of the previous API).
UINT16_SCALINGS = SCALINGS
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_CHANNEL_INTERPS = {
    1: ("gray",),
    2: ("gray", "alpha"),
    3: ("red", "green", "blue"),
    4: ("red", "green", "blue", "alpha"),
}


@dataclass
class RawRaster:
    """A decoded file before band selection and scaling.

    Attributes:
        data: (H, W, C) array of the file's pixel type, bands in file order.
        interps: colour interpretation per band (:mod:`sdconet.data.bands` names).
        nodata: the file's nodata value (TIFF: GDAL's tag), or None.
        mask: (H, W) per-dataset mask (alpha band of a TIFF; 0 = no data), or None.
        palette: (N, 3) uint8 colour table of a palette band, or None.
    """

    data: np.ndarray
    interps: tuple[str, ...]
    nodata: float | None = None
    mask: np.ndarray | None = None
    palette: np.ndarray | None = None


def select_rgb(raw: RawRaster, choice: BandChoice, scaling: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a band choice, the validity rule and the scaling to a decoded raster -> ``(rgb, valid)``: (H, W, 3)
    uint8 and (H, W) bool (None when every pixel is valid)."""
    unique = list(choice.unique)
    values = raw.data[..., [b - 1 for b in unique]]
    valid = valid_pixels(values, raw.nodata, raw.mask)
    if choice.palette:
        if raw.palette is None:
            raise ValueError("select_rgb: a palette band without a colour table")
        index = values[..., 0].astype(np.int64)
        rgb = raw.palette[np.clip(index, 0, len(raw.palette) - 1)]
        if valid is not None:
            rgb[~valid] = 0
        return rgb, valid
    scaled = scaling_for_array(values, scaling, valid).apply(values, valid)
    if tuple(unique) == choice.indexes:
        return scaled, valid
    return scaled[..., [unique.index(b) for b in choice.indexes]], valid


def _channels_last(arr: np.ndarray) -> np.ndarray:
    return arr[:, :, None] if arr.ndim == 2 else arr


def _pil_raw(data: bytes) -> RawRaster:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F", "L", "LA", "RGB", "RGBA"):
                arr = np.array(im)
            else:
                arr = np.array(im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB"))
    arr = _channels_last(arr)
    return RawRaster(arr, _CHANNEL_INTERPS.get(arr.shape[2], ()))


def _cv2_raw(data: bytes) -> RawRaster | None:
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        return None
    arr = _channels_last(arr)
    if arr.shape[2] in (3, 4):  # OpenCV's BGR(A) -> RGB(A)
        arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
    return RawRaster(arr, _CHANNEL_INTERPS.get(arr.shape[2], ()))


def _tiff_interps(page) -> tuple[str, ...]:
    import tifffile

    n = int(page.samplesperpixel)
    extras = [("alpha" if int(e) in (1, 2) else "undefined") for e in (page.extrasamples or ())]
    base = n - len(extras)
    photometric = page.photometric
    P = tifffile.PHOTOMETRIC
    if photometric in (P.RGB, P.YCBCR) and base >= 3:
        names = ["red", "green", "blue"] + ["undefined"] * (base - 3)
    elif photometric in (P.MINISBLACK, P.MINISWHITE):
        names = ["gray"] + ["undefined"] * (base - 1)
    elif photometric == P.PALETTE:
        names = ["palette"] + ["undefined"] * (base - 1)
    else:
        names = ["undefined"] * base
    return tuple(names + extras)


def _tiff_nodata(page) -> float | None:
    tag = page.tags.get(42113)  # GDAL_NODATA
    if tag is None:
        return None
    try:
        return float(str(tag.value).strip().strip("\x00"))
    except ValueError:
        return None


def _alpha_mask(data: np.ndarray, interps: Sequence[str]) -> np.ndarray | None:
    alpha = [i for i, name in enumerate(interps) if name == "alpha"]
    return data[..., alpha[0]] if alpha else None


def _tiff_raw(data: bytes, path: str) -> tuple[RawRaster | None, tuple[str, ...], float | None]:
    """Decode a TIFF with tifffile -> ``(raster, interps, nodata)``; the raster is None when it needs a codec
    tifffile lacks (e.g. LZW or JPEG without ``imagecodecs``; the caller falls back)."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            interps = _tiff_interps(page)
            nodata = _tiff_nodata(page)
            colormap = page.colormap
            try:
                arr = page.asarray()
            except (KeyError, ValueError, NotImplementedError, RuntimeError, ImportError):
                return None, interps, nodata
            axes = page.axes
    except tifffile.TiffFileError as exc:
        raise ImageReadError(path, f"not a readable TIFF ({exc})") from exc
    if axes.startswith("S") and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    arr = _channels_last(np.asarray(arr))
    if arr.ndim != 3:
        raise ImageReadError(path, f"unsupported TIFF layout {axes} {arr.shape}")
    palette = None
    if colormap is not None and interps[0] == "palette":
        palette = (np.asarray(colormap, dtype=np.float64).T / 257.0).round().astype(np.uint8)
    interps = interps[: arr.shape[2]]
    return RawRaster(arr, interps, nodata, _alpha_mask(arr, interps), palette), interps, nodata


def _rasterio_raw(data: bytes) -> RawRaster | None:
    """Decode any raster GDAL reads (all bands), when rasterio is installed."""
    try:
        import rasterio
        from rasterio.io import MemoryFile
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile(data) as mem, mem.open() as ds:
            arr = np.moveaxis(ds.read(), 0, -1)
            interps = tuple(ci.name for ci in ds.colorinterp)
            flags = ds.mask_flag_enums[0] if ds.count else ()
            shared = any(f.name in ("per_dataset", "alpha") for f in flags)
            mask = ds.read_masks(1) if shared else None
            palette = None
            if interps and interps[0] == "palette":
                cmap = ds.colormap(1)
                palette = np.zeros((max(cmap) + 1, 3), np.uint8)
                for k, rgba in cmap.items():
                    palette[k] = rgba[:3]
            nodata = ds.nodata
    return RawRaster(arr, interps, nodata, mask, palette)


def decode_raw(data: bytes, path: str) -> RawRaster:
    """Decode file bytes into a :class:`RawRaster` (module docstring: which decoder for which file).

    Raises:
        ImageReadError: nothing can decode it (the message names the path and every decoder's reason).
    """
    errors = []
    if data.startswith(_TIFF_MAGICS):
        raw, interps, nodata = _tiff_raw(data, path)
        if raw is None:
            raw = _rasterio_raw(data)
        if raw is None and interps in tuple(_CHANNEL_INTERPS.values()):
            # OpenCV decodes LZW/JPEG TIFFs too, and its channel order is known for grey and RGB(A) files.
            raw = _cv2_raw(data)
            if raw is not None:
                raw.nodata, raw.mask = nodata, _alpha_mask(raw.data, raw.interps)
        if raw is not None:
            return raw
        raise ImageReadError(
            path,
            "this TIFF's compression needs the imagecodecs package (pip install imagecodecs) or rasterio "
            "(pip install 'sdconet[geo]')",
        )
    decoders = (_pil_raw,) if data.startswith(_JPEG_MAGIC) else (_cv2_raw, _pil_raw)
    for decode in decoders:
        try:
            raw = decode(data)
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, TypeError, cv2.error, Image.DecompressionBombError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if raw is not None:
            return raw
        errors.append("OpenCV could not decode it")
    raise ImageReadError(path, "; ".join(errors) or "unknown format")


def read_image_rgb(
    path: str | os.PathLike,
    scaling: str = DEFAULT_SCALING,
    bands: Sequence[int] | None = None,
    *,
    uint16_scaling: str | None = None,
) -> np.ndarray:
    """Read an image file as 8-bit RGB (:func:`read_image` without the validity mask)."""
    if uint16_scaling is not None:
        scaling = uint16_scaling
    return read_image(path, scaling, bands)[0]


def read_image(
    path: str | os.PathLike, scaling: str = DEFAULT_SCALING, bands: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image file as 8-bit RGB, with its validity mask.

    Args:
        path: image file (JPEG, PNG, TIFF/GeoTIFF of any band count, BMP, ...).
        scaling: ``"percentile"`` (default), ``"full"`` or ``"none"``: how 16-bit and float rasters become 8-bit
            (:mod:`sdconet.data.scaling`).
        bands: 1-based band numbers shown as R, G, B (one number: grey), or None for the default of
            :mod:`sdconet.data.bands`.

    Returns:
        ``(rgb, valid)``: ``uint8`` array of shape (H, W, 3), RGB order, C-contiguous; (H, W) bool, False at nodata /
        alpha-0 pixels of TIFFs (:func:`sdconet.data.bands.valid_pixels`), or None when every pixel is valid.

    Raises:
        ImageReadError: the file is missing, empty, corrupt, truncated or has an unsupported layout, or its
            bands need ``bands`` (:class:`~sdconet.data.bands.BandSelectionError`); the message names the path.
    """
    check_scaling(scaling)
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from exc
    if not data:
        raise ImageReadError(path, "empty file")
    raw = decode_raw(data, path)
    choice = choose_bands(raw.data.shape[2], raw.interps, bands, path)
    try:
        rgb, valid = select_rgb(raw, choice, scaling)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(path, f"unsupported pixel data ({raw.data.dtype}): {exc}") from exc
    return np.ascontiguousarray(rgb), valid


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Read an image's ``(width, height)`` from its header without decoding the pixels.

    Raises:
        ImageReadError: the header cannot be read (the message names the path).
    """
    path = str(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError as exc:
        raise ImageReadError(path, "no such file") from exc
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from exc
    if magic in _TIFF_MAGICS:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        except (tifffile.TiffFileError, OSError, ValueError) as exc:
            raise ImageReadError(path, f"not a readable TIFF ({exc})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        # Formats Pillow cannot parse (or huge rasters): decode fully as the fallback.
        height, width = decode_raw(Path(path).read_bytes(), path).data.shape[:2]
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
