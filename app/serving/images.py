"""Uploaded image bytes → the float tensor a vision checkpoint expects.

Decoding (:func:`decode_image`) accepts PNG, JPEG, WebP and BMP in any Pillow mode
(grayscale, 16-bit grayscale, RGB, RGBA / LA / transparent palette composited on white,
palette, CMYK, bilevel), applies the EXIF orientation and refuses decompression bombs by
reading the pixel count from the header before any pixel data is decoded.
Preprocessing (:func:`preprocess_image`) follows the checkpoint's ``input`` /
``preprocessing`` records (:class:`ImageSpec`):

- ``resize="model"``: resample to the training resolution;
- ``resize="native"``: keep the resolution and pad with white on the right and bottom to a
  multiple of the patch size (pLSTM extrapolates to other sizes, paper section 5.1).

Every failure is an :class:`ImageError` carrying the HTTP status the server answers with.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import ApiError
from models.input_spec import native_image_size

SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
CONTENT_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/x-bmp": "BMP",
    "image/x-ms-bmp": "BMP",
}
GENERIC_CONTENT_TYPES = frozenset({"application/octet-stream", "image/*"})
"""Content types that name no format: the bytes decide."""
RESIZE_MODES = ("model", "native")
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
WHITE = 255
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ApiError, ValueError):
    """A client's image cannot be used; ``status_code`` is the HTTP answer."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, message)


class CorruptImage(ImageError):
    """The bytes are not a readable image (truncated, garbage, empty)."""

    status_code = 400


class ImageTooLarge(ImageError):
    """More pixels than allowed (also decompression bombs)."""

    status_code = 413


class UnsupportedImage(ImageError):
    """A content type or image format other than PNG, JPEG, WebP and BMP."""

    status_code = 415


class ImageTooSmall(ImageError):
    """Smaller than one patch of the model on some side."""

    status_code = 422


@dataclass(frozen=True)
class ImageSpec:
    """What a vision checkpoint expects: training size ``height`` × ``width``, ``patch_size``,
    output ``channels`` (1 or 3), ``grayscale`` (convert colour to luminance first, then copy
    to every channel), ``rescale`` (multiplies 0..255 pixel values), per-channel ``mean`` /
    ``std`` (applied after rescaling), the ``resample`` filter name for ``resize="model"`` and
    the ``value_range`` (low, high) of model input values the checkpoint declares, if any.
    """

    height: int
    width: int
    patch_size: int
    channels: int = 3
    grayscale: bool = False
    rescale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resample: str = "bicubic"
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for key in ("height", "width", "patch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.height % self.patch_size or self.width % self.patch_size:
            raise ValueError(
                f"training size {self.height}x{self.width} is not a multiple of patch_size "
                f"{self.patch_size}"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.channels == 1 and not self.grayscale:
            raise ValueError("channels 1 needs grayscale preprocessing")
        if not (isinstance(self.rescale, int | float) and math.isfinite(self.rescale)):
            raise ValueError(f"rescale must be a finite number, got {self.rescale!r}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if len(value) != self.channels:
                raise ValueError(f"{key} needs {self.channels} values, got {list(value)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {list(self.std)}")
        if self.resample not in RESAMPLING:
            raise ValueError(f"resample must be one of {list(RESAMPLING)}, got {self.resample!r}")
        if self.value_range is not None:
            low, high = self.value_range
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(
                    f"value_range must be two finite numbers, low < high, got "
                    f"{list(self.value_range)}"
                )

    @classmethod
    def from_metadata(
        cls,
        input_spec: Mapping[str, Any] | None,
        preprocessing: Mapping[str, Any] | None,
        config: Mapping[str, Any] | None = None,
    ) -> ImageSpec:
        """Build from a checkpoint's ``input`` and ``preprocessing`` records (as training
        writes them: height, width, patch_size, channels; color, rescale, mean, std, resize),
        falling back to the model ``config`` (img_size, patch_size, in_chans). Raises
        ValueError naming a missing or bad key."""
        spec = dict(input_spec or {})
        prep = dict(preprocessing or {})
        conf = dict(config or {})
        if spec.get("kind", "image") != "image":
            raise ValueError(f"input kind is {spec.get('kind')!r}, not an image model")
        height, width = native_image_size(spec, conf)
        patch = spec.get("patch_size", conf.get("patch_size"))
        if patch is None:
            raise ValueError("checkpoint records no image patch_size (input spec or config)")
        channels = spec.get("channels", conf.get("in_chans", 3))
        color = prep.get("color", "rgb")
        if color not in ("grayscale", "rgb"):
            raise ValueError(f"preprocessing color must be 'grayscale' or 'rgb', got {color!r}")
        mean = prep.get("mean", [0.0] * channels)
        std = prep.get("std", [1.0] * channels)
        if not isinstance(mean, Sequence) or not isinstance(std, Sequence):
            raise ValueError(f"preprocessing mean / std must be lists, got {mean!r} / {std!r}")
        value_range = spec.get("value_range")
        if value_range is not None and (
            not isinstance(value_range, Sequence) or len(value_range) != 2
        ):
            raise ValueError(f"input value_range must be [low, high], got {value_range!r}")
        return cls(
            height=height,
            width=width,
            patch_size=patch,
            channels=channels,
            grayscale=color == "grayscale",
            rescale=prep.get("rescale", 1.0 / 255.0),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            resample=prep.get("resize", "bicubic"),
            value_range=None
            if value_range is None
            else (float(value_range[0]), float(value_range[1])),
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Any) -> ImageSpec:
        """From a :class:`models.checkpoint.LoadedCheckpoint` (``input_spec``,
        ``preprocessing``, ``config``)."""
        return cls.from_metadata(checkpoint.input_spec, checkpoint.preprocessing, checkpoint.config)

    def input_range(self) -> tuple[float, float]:
        """(low, high) of the model input: ``value_range`` when the checkpoint declares it,
        else the range preprocessing gives 0..255 pixels (over all channels)."""
        if self.value_range is not None:
            return self.value_range
        ends = [
            (pixel * self.rescale - mean) / std
            for mean, std in zip(self.mean, self.std, strict=True)
            for pixel in (0, 255)
        ]
        return min(ends), max(ends)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[C,H,W]`` or ``[B,C,H,W]`` pixel values 0..255 → model input (rescale, mean, std)."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).reshape(shape)
        std = torch.tensor(self.std, dtype=torch.float32).reshape(shape)
        return (pixels.to(torch.float32) * self.rescale - mean) / std


@dataclass(frozen=True)
class PreparedImage:
    """``tensor`` ``[C,H,W]`` float32 model input; ``size`` (H, W) fed to the model;
    ``original_size`` (H, W) after EXIF orientation; ``padding`` (bottom, right) white pixels
    added (``resize="native"`` only)."""

    tensor: torch.Tensor
    size: tuple[int, int]
    original_size: tuple[int, int]
    padding: tuple[int, int]
    resize: str


def _format_from_content_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    kind = content_type.split(";", 1)[0].strip().lower()
    if not kind or kind in GENERIC_CONTENT_TYPES:
        return None
    if kind not in CONTENT_TYPES:
        raise UnsupportedImage(
            f"unsupported content type {kind!r}; send PNG, JPEG, WebP or BMP "
            f"({', '.join(sorted(CONTENT_TYPES))})"
        )
    return CONTENT_TYPES[kind]


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise CorruptImage("empty image: the upload has no bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        other = _identify_any(data)
        if other is not None:
            raise UnsupportedImage(
                f"unsupported image format {other}; send PNG, JPEG, WebP or BMP"
            ) from None
        raise CorruptImage("corrupt image: the bytes are not a PNG, JPEG, WebP or BMP") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"corrupt image: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image has {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels}"
        )
    return image


def _identify_any(data: bytes) -> str | None:
    """The format name Pillow gives unsupported-but-recognised bytes (GIF, TIFF, ...)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # any failure means "not recognised": the caller reports corrupt data
        return None


def _to_standard_mode(image: Image.Image) -> Image.Image:
    """Any decoded mode → "RGB" or "L" (alpha composited on white, 16-bit scaled to 8)."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode != "F" and values.max(initial=0) > 255:
            values = values * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (WHITE, WHITE, WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")  # P, CMYK, YCbCr, ...


def decode_image(
    data: bytes,
    content_type: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Upload bytes → an upright "RGB" or "L" Pillow image.

    ``content_type`` (e.g. ``"image/png"``; parameters and case ignored) only rejects types
    other than PNG / JPEG / WebP / BMP early; the format is read from the bytes. Raises
    :class:`UnsupportedImage` (415), :class:`CorruptImage` (400) or :class:`ImageTooLarge`
    (413, checked from the header before decoding, so bombs never allocate).
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    _format_from_content_type(content_type)
    image = _open(bytes(data), max_pixels)
    fmt = image.format
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_standard_mode(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CorruptImage(f"corrupt {fmt} image: {exc}") from None


def preprocess_image(
    image: Image.Image,
    spec: ImageSpec,
    resize: Literal["model", "native"] | str = "model",
) -> PreparedImage:
    """An "RGB" / "L" image (from :func:`decode_image`) → :class:`PreparedImage`.

    Colour is converted per ``spec`` (grayscale → luminance copied to every channel), then
    ``resize="model"`` resamples to ``spec.height`` × ``spec.width`` and ``resize="native"``
    pads with white to the next multiple of ``spec.patch_size`` on the bottom and right.
    Raises :class:`ImageTooSmall` (422) when a side is shorter than one patch, ValueError for
    an unknown ``resize``.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
    width, height = image.size
    p = spec.patch_size
    if width < p or height < p:
        raise ImageTooSmall(
            f"image is {width}x{height} pixels, smaller than one {p}x{p} patch of the model"
        )
    image = image.convert("L") if spec.grayscale else image.convert("RGB")
    if resize == "model":
        if (height, width) != (spec.height, spec.width):
            image = image.resize((spec.width, spec.height), RESAMPLING[spec.resample])
        pad_bottom = pad_right = 0
    else:
        pad_bottom, pad_right = -height % p, -width % p
        if pad_bottom or pad_right:
            fill: Any = WHITE if image.mode == "L" else (WHITE, WHITE, WHITE)
            canvas = Image.new(image.mode, (width + pad_right, height + pad_bottom), fill)
            canvas.paste(image, (0, 0))
            image = canvas
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    if spec.grayscale and spec.channels == 3:
        pixels = pixels.expand(3, -1, -1)
    tensor = spec.normalize(pixels).contiguous()
    return PreparedImage(
        tensor=tensor,
        size=(int(tensor.shape[1]), int(tensor.shape[2])),
        original_size=(height, width),
        padding=(pad_bottom, pad_right),
        resize=resize,
    )


INLINE_DECODE_PIXELS = 256 * 256
"""Images up to this many pixels are decoded on the event loop (well under a millisecond);
larger ones in a worker thread, whose hand-off costs more than decoding a small image."""


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from ``data``'s header, read without decoding the pixels (before any
    EXIF rotation); None for anything but a readable PNG / JPEG / WebP / BMP header (whose
    error the full decode reports)."""
    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
            width, height = image.size
    except Exception:  # any failure: leave it to decode_image, which names the problem
        return None
    return int(width), int(height)


def decodes_quickly(data: bytes, max_pixels: int = INLINE_DECODE_PIXELS) -> bool:
    """True when ``data``'s header (read without decoding) shows a supported image of at most
    ``max_pixels`` pixels; False for anything else, including unreadable bytes."""
    size = header_size(data)
    return size is not None and size[0] * size[1] <= max_pixels


def load_image(
    data: bytes,
    spec: ImageSpec,
    *,
    content_type: str | None = None,
    resize: Literal["model", "native"] | str = "model",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreparedImage:
    """:func:`decode_image` then :func:`preprocess_image`."""
    return preprocess_image(decode_image(data, content_type, max_pixels=max_pixels), spec, resize)
