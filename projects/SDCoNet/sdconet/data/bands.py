"""Which bands of a raster become the R, G, B channels the model sees: one rule for every reader.

Every reader (Pillow/OpenCV and tifffile in :mod:`sdconet.data.image_io`, rasterio in
:mod:`sdconet.inference.geo.raster`) describes a file's bands by their *colour interpretation* (GDAL's names:
``red``, ``green``, ``blue``, ``alpha``, ``gray``, ``palette``, ``undefined``, ...) and calls :func:`choose_bands`:

1. ``--bands`` given (``bands=(3, 2, 1)``, 1-based, one or three numbers): exactly those bands; one band is
   replicated to grey. Any file, any band count.
2. Otherwise the choice must be unambiguous, never silent:

   * more than 4 bands: refused, ``--bands`` is required (multispectral rasters have no standard RGB);
   * the bands the colour interpretation names ``red``, ``green``, ``blue`` (each exactly once), in that order
     (e.g. a 4-band R, G, B, alpha file, or a file whose bands 3, 2, 1 say red, green, blue);
   * one band (``gray`` or ``undefined``), with or without an ``alpha`` band: grey replicated to RGB;
   * one ``palette`` band: the colour table's RGB;
   * anything else (e.g. 3 or 4 ``gray``/``undefined`` bands of a multispectral TIFF): refused, ``--bands`` is
     required; the error names the file, its band count and interpretations, and suggests a choice.

An ``alpha`` band is never a colour channel; readers use it as the validity mask instead (:func:`valid_pixels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ImageReadError

__all__ = [
    "MAX_DEFAULT_BANDS",
    "BandChoice",
    "BandSelectionError",
    "choose_bands",
    "parse_bands",
    "valid_pixels",
]

#: Rasters with more bands than this always need ``--bands``.
MAX_DEFAULT_BANDS = 4


class BandSelectionError(ImageReadError):
    """A raster's bands cannot be mapped to RGB without ``--bands`` (or ``--bands`` does not fit the file)."""


@dataclass(frozen=True)
class BandChoice:
    """The bands read as R, G, B.

    Attributes:
        indexes: three 1-based band numbers giving R, G, B (the same number three times for grey).
        palette: the single band is a palette index to expand through the colour table.
        reason: how the choice was made (for log lines): ``"--bands"``, ``"colour interpretation"``, ``"grey"``,
            ``"palette"``.
    """

    indexes: tuple[int, int, int]
    palette: bool = False
    reason: str = ""

    @property
    def unique(self) -> tuple[int, ...]:
        """The distinct band numbers, in first-use order (what a reader has to decode)."""
        return tuple(dict.fromkeys(self.indexes))

    def describe(self) -> str:
        """E.g. ``"bands 3,2,1 (--bands)"``."""
        return f"bands {','.join(map(str, self.indexes))} ({self.reason})"


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Parse ``--bands``: ``"3,2,1"`` (or ``"4"`` for one grey band) -> ``(3, 2, 1)``; None stays None.

    Raises:
        ValueError: not one or three positive integers (the message names ``--bands``).
    """
    if text is None:
        return None
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
        try:
            values = tuple(int(p) for p in parts)
        except ValueError as exc:
            raise ValueError(f"--bands must be band numbers like 3,2,1, got {text!r}") from exc
    else:
        values = tuple(int(v) for v in text)
    if len(values) not in (1, 3) or min(values, default=0) < 1:
        raise ValueError(f"--bands takes one or three band numbers (1-based), e.g. 3,2,1; got {text!r}")
    return values


def _suggest(count: int) -> str:
    return "1,2,3" if count >= 3 else "1"


def choose_bands(
    count: int, interps: Sequence[str], bands: Sequence[int] | None = None, source: str = ""
) -> BandChoice:
    """Apply the band rule of the module docstring.

    Args:
        count: number of bands in the file.
        interps: colour interpretation of each band (GDAL's lower-case names; unknown names count as
            ``undefined``); may be shorter than ``count`` (missing ones are ``undefined``).
        bands: the user's ``--bands`` (1-based), or None.
        source: the file, for error messages.

    Returns:
        :class:`BandChoice`.

    Raises:
        BandSelectionError: the choice is ambiguous without ``--bands``, or ``--bands`` names a band the file
            does not have (the message names the file).
    """
    names = [str(i).lower() for i in interps] + ["undefined"] * max(0, count - len(interps))
    names = names[:count]
    described = f"{count} band(s) ({', '.join(names)})"
    if bands is not None:
        bands = parse_bands(bands)
        bad = [b for b in bands if b > count]
        if bad:
            raise BandSelectionError(source, f"--bands {','.join(map(str, bands))}: the file has {described}")
        idx = tuple(bands) * 3 if len(bands) == 1 else tuple(bands)
        return BandChoice(idx, palette=False, reason="--bands")  # type: ignore[arg-type]
    if count < 1:
        raise BandSelectionError(source, "the file has no bands")
    if count > MAX_DEFAULT_BANDS:
        raise BandSelectionError(
            source,
            f"{described}: more than {MAX_DEFAULT_BANDS} bands, choose the three shown as R,G,B with --bands "
            f"(e.g. --bands {_suggest(count)})",
        )
    colour = [names.index(c) + 1 for c in ("red", "green", "blue") if names.count(c) == 1]
    if len(colour) == 3:
        return BandChoice((colour[0], colour[1], colour[2]), reason="colour interpretation")
    others = [n for n in names if n != "alpha"]
    if len(others) == 1:
        band = names.index(others[0]) + 1
        if others[0] == "palette":
            return BandChoice((band, band, band), palette=True, reason="palette")
        return BandChoice((band, band, band), reason="grey")
    raise BandSelectionError(
        source,
        f"{described}: no RGB colour interpretation, choose the bands shown as R,G,B with --bands "
        f"(e.g. --bands {_suggest(count)})",
    )


def valid_pixels(values: np.ndarray, nodata: float | None, mask: np.ndarray | None) -> np.ndarray | None:
    """Which pixels hold data (GDAL's rules, the same for every reader).

    Args:
        values: (h, w, k) the selected bands.
        nodata: the file's nodata value, or None. A pixel is nodata when **every** selected band equals it.
        mask: (h, w) per-dataset mask (alpha band or mask band; 0 = no data), or None.

    Returns:
        (h, w) bool, or None when every pixel is valid.
    """
    valid = None if mask is None else np.asarray(mask) > 0
    if nodata is not None:
        if np.isnan(nodata):
            hit = (
                np.isnan(values) if np.issubdtype(values.dtype, np.floating) else np.zeros(values.shape, bool)
            )
        else:
            hit = values == np.asarray(nodata).astype(values.dtype)
        has_data = ~hit.all(axis=2)
        valid = has_data if valid is None else valid & has_data
    if valid is not None and valid.all():
        return None
    return valid
