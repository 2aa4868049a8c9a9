"""Uploaded images to model input rows, by a preprocessing spec shipped beside
the model (``digits.onnx`` -> ``digits.image.json``): the size, the colour
mode, the value range, whether to invert (dark ink on light paper to the
light-on-dark of the training data), whether to crop to the ink first, and
whether to stretch the contrast (so a thin pen stroke is as dark as the
training ink), and the layout of the row.

Decoding is Pillow's, PNG and JPEG only. The pixel count is checked from the
header, before any pixel is decoded, so a decompression bomb (a small file
that inflates to gigabytes) is refused for the price of reading its header.
Nothing here touches the event loop: callers run ``image_rows`` in a worker
thread for large files.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageSpec",
    "image_rows",
    "image_sidecar",
    "image_spec_for",
    "looks_like_image",
]

# Far above any camera's picture, far below what would exhaust an edge box
# (Pillow's own limit, 89 megapixels, is meant for desktops). A spec file may
# set its own "max_pixels".
DEFAULT_MAX_PIXELS = 4096 * 4096

# Modes an image can arrive in that convert to grayscale or RGB without
# guessing; others (CMYK, 32-bit integer or float pixels, ...) are refused.
_ACCEPTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16"})
_FORMATS = ("PNG", "JPEG")


class ImageError(ValueError):
    """The upload is not an image this model can take; the message says why."""


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes one input row of a model."""

    width: int
    height: int
    mode: Literal["L", "RGB"] = "L"
    value_range: tuple[float, float] = (0.0, 1.0)
    invert: bool = False
    crop_to_ink: bool = False
    stretch: bool = False
    layout: Literal["flat", "HWC", "CHW"] = "flat"
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageSpec:
        lo, hi = data.get("range", (0.0, 1.0))
        spec = cls(
            width=int(data["width"]),
            height=int(data["height"]),
            mode=data.get("mode", "L"),
            value_range=(float(lo), float(hi)),
            invert=bool(data.get("invert", False)),
            crop_to_ink=bool(data.get("crop_to_ink", False)),
            stretch=bool(data.get("stretch", False)),
            layout=data.get("layout", "flat"),
            max_pixels=int(data.get("max_pixels", DEFAULT_MAX_PIXELS)),
        )
        if spec.mode not in ("L", "RGB"):
            raise ValueError(f"image mode must be 'L' or 'RGB', not {spec.mode!r}")
        if spec.layout not in ("flat", "HWC", "CHW"):
            raise ValueError(f"image layout must be 'flat', 'HWC' or 'CHW', not {spec.layout!r}")
        if spec.width < 1 or spec.height < 1 or spec.max_pixels < 1:
            raise ValueError("image width, height and max_pixels must be positive")
        return spec

    @property
    def row_shape(self) -> tuple[int, ...]:
        channels = 1 if self.mode == "L" else 3
        if self.layout == "flat":
            return (self.width * self.height * channels,)
        if self.layout == "HWC":
            return (self.height, self.width, channels)
        return (channels, self.height, self.width)


def image_sidecar(model_path: str | Path) -> Path:
    """Where a model's image spec goes: ``digits.onnx`` -> ``digits.image.json``."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.image.json")


@functools.lru_cache(maxsize=64)
def image_spec_for(model_path: str) -> ImageSpec | None:
    """The spec beside the model, or None when it has none (it takes no images)."""
    sidecar = image_sidecar(model_path)
    if not sidecar.is_file():
        return None
    return ImageSpec.from_json(json.loads(sidecar.read_text(encoding="utf-8")))


def looks_like_image(data: bytes) -> bool:
    """PNG or JPEG by its magic bytes (what the content type says is not trusted)."""
    return data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")


def image_rows(data: bytes, spec: ImageSpec) -> np.ndarray:
    """One row (shape ``(1, *spec.row_shape)``, float32) from a PNG or JPEG.
    Raises ImageError for a file that is not one, has too many pixels, or
    comes in a mode that does not convert."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageError("'file' is not a PNG or JPEG image") from None
    except Image.DecompressionBombError:
        raise ImageError(_too_large(None, spec)) from None
    with image:
        width, height = image.size
        if width * height > spec.max_pixels:
            raise ImageError(_too_large((width, height), spec))
        if image.mode not in _ACCEPTED_MODES:
            raise ImageError(f"'file' is a {image.mode} image; send a grayscale or RGB PNG or JPEG")
        try:
            image.load()
        except Exception:
            raise ImageError("'file' is a damaged or truncated image") from None
        pixels = _to_mode(image, spec.mode)
    values = np.asarray(pixels, dtype=np.float32)
    if spec.invert:
        values = 255.0 - values
    if spec.crop_to_ink:
        values = _crop_to_ink(values)
    resized = Image.fromarray(values.clip(0, 255).astype(np.uint8)).resize(
        (spec.width, spec.height), Image.Resampling.BOX
    )
    out = np.asarray(resized, dtype=np.float32)
    peak = float(out.max())
    if spec.stretch and peak > 0:
        # A thin pen stroke averages to grey at 8x8; the training ink is dark.
        out = out * (255.0 / peak)
    lo, hi = spec.value_range
    out = lo + out * ((hi - lo) / 255.0)
    if spec.mode == "RGB" and spec.layout == "CHW":
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out.reshape((1, *spec.row_shape)), dtype=np.float32)


def _too_large(size: tuple[int, int] | None, spec: ImageSpec) -> str:
    shown = f"{size[0]}x{size[1]} pixels" if size else "too many pixels"
    return f"'file' is {shown}; the limit is {spec.max_pixels} pixels"


def _to_mode(image: Any, mode: str) -> Any:
    """Grayscale or RGB, transparent parts on white paper."""
    from PIL import Image

    if image.mode == "I;16":
        image = image.point(lambda v: v / 256).convert("L")
    if "A" in image.getbands() or image.mode in ("P", "PA"):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return image.convert(mode)


def _crop_to_ink(values: np.ndarray) -> np.ndarray:
    """A digit drawn small on a large page, cropped to its ink and centred in
    a square, as the training digits fill their frame top to bottom. Ink
    that already fills most of the page (a scan of a single digit) is left
    as it is: cropping it would only distort it."""
    ink = values if values.ndim == 2 else values.max(axis=2)
    rows = np.flatnonzero(ink.max(axis=1) > 32)
    cols = np.flatnonzero(ink.max(axis=0) > 32)
    if rows.size == 0 or cols.size == 0:
        return values  # a blank page: nothing to centre
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    height, width = ink.shape
    if max((bottom - top) / height, (right - left) / width) >= 0.75:
        return values
    side = max(bottom - top, right - left)
    square = np.zeros((side, side, *values.shape[2:]), dtype=values.dtype)
    y = (side - (bottom - top)) // 2
    x = (side - (right - left)) // 2
    square[y : y + bottom - top, x : x + right - left] = values[top:bottom, left:right]
    return square
