"""Image payloads → model inputs: the ``/v1`` upload (a multipart field ``image`` or a raw
image body) and the Open Inference Protocol pixel tensor (``/v2``).

An OIP image tensor (already checked by :class:`app.api.schemas.v2.RequestInput` and decoded to
numpy by :mod:`app.api.body_decoding`) has layout ``[B,C,H,W]`` (NCHW) or ``[B,H,W,C]`` (NHWC),
told apart by which axis has the model's C channels (NCHW when both do). ``UINT8`` tensors are
raw 0..255 pixels and get the checkpoint's preprocessing (grayscale conversion as Pillow does
it, rescale, mean / std); ``FP32`` tensors are taken as finished model input and passed
unchanged, once their values are within the model's input range (the checkpoint's
``value_range``, else what its preprocessing makes of 0..255 pixels). Nothing is resized: H and
W must be multiples of the patch size. Bad tensors raise
:class:`app.api.tensor_inputs.InvalidTensor` (HTTP 400) or
:class:`app.api.tensor_inputs.InvalidTensorValue` (HTTP 422).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from fastapi import Request
from starlette.datastructures import UploadFile

from app.api.body_decoding import DecodedTensor
from app.api.tensor_inputs import InvalidTensor, InvalidTensorValue, batch_size
from app.core.errors import ApiError
from app.serving.images import ImageSpec, ImageTooLarge

IMAGE_DATATYPES = ("FP32", "UINT8")
INPUT_RANGE_SLACK = 1e-3
"""FP32 image values may leave the model's input range by this fraction of its width
(rounding in the client's preprocessing)."""
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp")


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    """The uploaded image bytes and their content type: multipart field ``image`` or a raw
    ``image/*`` (or ``application/octet-stream``) body; 422 / 415 otherwise."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16, max_part_size=max_bytes) as form:
            field = form.get("image")
            if not isinstance(field, UploadFile):
                raise ApiError(422, "image: multipart field 'image' with a file is missing")
            return await field.read(), field.content_type
    if not kind.startswith(RAW_IMAGE_TYPES):
        raise ApiError(
            415,
            f"unsupported content type {kind or 'none'!r}: send the image as multipart field "
            "'image' or as a raw image/* body",
        )
    return await request.body(), content_type


def _luminance(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-valued ``[B,3,H,W]`` → ``[B,1,H,W]`` with Pillow's integer RGB→L formula."""
    r, g, b = pixels.to(torch.int64).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def _layout(shape: Sequence[int], channels: int, name: str) -> str:
    if len(shape) != 4:
        raise InvalidTensor(
            f"input {name!r}: shape {list(shape)} given, expected [B,{channels},H,W] (NCHW) "
            f"or [B,H,W,{channels}] (NHWC)"
        )
    if shape[1] == channels:
        return "NCHW"
    if shape[3] == channels:
        return "NHWC"
    raise InvalidTensor(
        f"input {name!r}: shape {list(shape)} has no axis of {channels} channels "
        f"(expected [B,{channels},H,W] or [B,H,W,{channels}])"
    )


def _check_range(values: np.ndarray, spec: ImageSpec, name: str) -> None:
    """FP32 model input must lie in the range the checkpoint declares (or its preprocessing
    produces): values far outside it only give the model NaN."""
    low, high = spec.input_range()
    slack = INPUT_RANGE_SLACK * (high - low)
    outside = (values < low - slack) | (values > high + slack)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InvalidTensorValue(
            f"input {name!r}: data[{i}] = {values[i]:.7g} is outside the model's input range "
            f"[{low:.7g}, {high:.7g}]"
        )


def images_from_tensor(
    tensor: DecodedTensor,
    spec: ImageSpec,
    *,
    max_batch: int | None = None,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """An ``FP32`` / ``UINT8`` pixel tensor (module docstring) → model input
    ``[B,C,H,W]`` float32. Raises :class:`InvalidTensor`, :class:`InvalidTensorValue` (422)
    for FP32 values outside :meth:`ImageSpec.input_range`, or
    :class:`app.serving.images.ImageTooLarge` (413) when H·W exceeds ``max_pixels``."""
    if tensor.datatype not in IMAGE_DATATYPES:
        raise InvalidTensor(
            f"input {tensor.name!r}: datatype {tensor.datatype} given, image models take "
            f"{' or '.join(IMAGE_DATATYPES)}"
        )
    input_channels = 3 if tensor.datatype == "UINT8" and spec.grayscale else spec.channels
    layout = _layout(tensor.shape, input_channels, tensor.name)
    batch_size(tensor, max_batch)
    b = tensor.shape[0]
    h, w = (tensor.shape[2], tensor.shape[3]) if layout == "NCHW" else tensor.shape[1:3]
    p = spec.patch_size
    if max_pixels is not None and h * w > max_pixels:
        raise ImageTooLarge(
            f"input {tensor.name!r}: {w}x{h} = {w * h} pixels per image exceed the limit of "
            f"{max_pixels}"
        )
    if h < p or w < p or h % p or w % p:
        raise InvalidTensor(
            f"input {tensor.name!r}: images are {h}x{w} (HxW); both sides must be positive "
            f"multiples of the patch size {p}"
        )
    if tensor.datatype == "FP32":
        _check_range(np.asarray(tensor.values), spec, tensor.name)
    dtype = torch.float32 if tensor.datatype == "FP32" else torch.int64
    values = torch.from_numpy(np.asarray(tensor.values)).to(dtype).reshape(tensor.shape)
    if layout == "NHWC":
        values = values.permute(0, 3, 1, 2)
    if tensor.datatype == "FP32":
        return values.contiguous()
    if spec.grayscale:
        values = _luminance(values).expand(b, spec.channels, h, w)
    return spec.normalize(values).contiguous()
