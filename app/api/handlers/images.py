"""Image models (kind ``image``): an upload (``/v1``) or a pixel tensor (``/v2``) → model input
``[B,C,H,W]`` → one model call per image, batched with other requests' images by the runtime →
ranked classes or OIP tensors."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from fastapi import Request

from app.api.body_decoding import DecodedTensor
from app.api.handlers.base import Decoded, ModelHandler, Predicted
from app.api.handlers.outputs import labels, ranked
from app.api.image_inputs import images_from_tensor, read_upload
from app.api.schemas.common import ImageSize
from app.api.schemas.v1 import ClassifyResponse
from app.api.schemas.v2 import TensorMetadata
from app.core.settings import Settings
from app.serving.admission import Deadline
from app.serving.cost_formulas import ImageBatch, Size
from app.serving.cost_limits import check_tokens
from app.serving.images import PreparedImage, decodes_quickly, header_size, load_image
from app.serving.inference import Outcome
from app.serving.model_thread import on_model_thread
from app.serving.repository import ModelEntry
from app.serving.runtime import Runtime

DEFAULT_TOP_K = 5
Resize = Literal["model", "native"]


@dataclass(frozen=True)
class ImageInputs:
    """Model input ``images`` ``[B,C,H,W]``; for an upload its size before resizing
    (height, width)."""

    images: torch.Tensor
    original_size: tuple[int, int] | None = None


def image_size(entry: ModelEntry, height: int, width: int) -> ImageBatch:
    """One image of ``height`` × ``width`` pixels (multiples of the patch) as a cost size."""
    patch = int(entry.config["patch_size"])
    return ImageBatch(1, height // patch, width // patch)


def padded_image_size(entry: ModelEntry, height: int, width: int) -> ImageBatch:
    """An image of ``height`` × ``width`` pixels padded to the patch grid (``resize=native``)."""
    patch = int(entry.config["patch_size"])
    return ImageBatch(1, -(-height // patch), -(-width // patch))


async def load_upload(
    request: Request,
    runtime: Runtime,
    settings: Settings,
    resize: Resize,
    *,
    max_tokens: int | None = None,
) -> PreparedImage:
    """The uploaded image as model input (:func:`app.serving.images.load_image`); large
    images are decoded on the model thread (:mod:`app.serving.model_thread`: their tensor ops
    run in parallel regions, which on any other thread would start a second OpenMP team).
    With ``resize=native`` and ``max_tokens``, an image whose header says it covers more
    patches is refused (413) before its pixels are decoded."""
    assert runtime.spec is not None  # every image runtime has one
    data, content_type = await read_upload(request, settings.max_body_bytes)
    if resize == "native" and max_tokens is not None and (header := header_size(data)):
        grid = padded_image_size(runtime.entry, height=header[1], width=header[0])
        check_tokens(grid, max_tokens, "resize=model")
    load = partial(
        load_image,
        data,
        runtime.spec,
        content_type=content_type,
        resize=resize,
        max_pixels=settings.max_image_pixels,
    )
    return load() if decodes_quickly(data) else await on_model_thread(load)


async def _every(runs: list[asyncio.Future[Outcome]]) -> list[Outcome]:
    """All results; when one fails, the others are cancelled (their queued work dropped)."""
    try:
        return await asyncio.gather(*runs)
    except BaseException:
        for run in runs:
            run.cancel()
        raise


class ImageHandler(ModelHandler[ImageInputs]):
    """Requests to image models."""

    kind = "image"
    v2_input = "images"
    smaller = "a smaller image"

    async def decode_v1(
        self, request: Request, runtime: Runtime, settings: Settings, resize: Resize
    ) -> Decoded[ImageInputs]:
        """The uploaded image (multipart field ``image`` or a raw image body), resized to the
        training size (``resize=model``) or padded to the patch grid (``native``; an image
        with too many patches is refused from its header, before its pixels are decoded)."""
        prepared = await load_upload(
            request, runtime, settings, resize, max_tokens=settings.max_tokens
        )
        height, width = prepared.size
        inputs = ImageInputs(prepared.tensor[None], prepared.original_size)
        return Decoded(inputs, image_size(runtime.entry, height, width))

    async def decode_v2(
        self, tensor: DecodedTensor, runtime: Runtime, settings: Settings
    ) -> Decoded[ImageInputs]:
        """The OIP pixel tensor as model input, converted on the model thread (see
        :func:`load_upload`)."""
        assert runtime.spec is not None
        images = await on_model_thread(
            partial(
                images_from_tensor,
                tensor,
                runtime.spec,
                max_batch=settings.max_queue_size,
                max_pixels=settings.max_image_pixels,
            )
        )
        return Decoded(ImageInputs(images), image_size(runtime.entry, *images.shape[2:]))

    async def _run(
        self, runtime: Runtime, inputs: ImageInputs, size: Size, path: str, deadline: Deadline
    ) -> Outcome:
        runs = [
            asyncio.ensure_future(runtime.classify(image, path, deadline))
            for image in inputs.images
        ]
        outcomes = await _every(runs)
        return Outcome(
            torch.stack([o.outputs for o in outcomes]),
            max(o.inference_s for o in outcomes),
            max(o.queue_s for o in outcomes),
        )

    def encode_v1(
        self,
        entry: ModelEntry,
        decoded: Decoded[ImageInputs],
        predicted: Predicted,
        *,
        top_k: int | None,
        resize: Resize,
        start: float,
    ) -> ClassifyResponse:
        """The ``/v1`` answer for one uploaded image: its ``top_k`` classes."""
        outputs = predicted.outputs[0]
        count = outputs.shape[0]
        height, width = decoded.inputs.images.shape[2:]
        original = decoded.inputs.original_size or (height, width)
        return ClassifyResponse(
            model=entry.name,
            version=str(entry.version),
            path=predicted.path,
            resize=resize,
            image_size=ImageSize(height=height, width=width),
            original_size=ImageSize(height=original[0], width=original[1]),
            timings=predicted.timings(start),
            predictions=ranked(
                outputs.softmax(-1), labels(entry, count), min(top_k or DEFAULT_TOP_K, count)
            ),
        )

    def v2_input_metadata(self, entry: ModelEntry) -> TensorMetadata:
        channels = int(entry.config.get("in_chans", 3))
        return TensorMetadata(name=self.v2_input, datatype="FP32", shape=[-1, channels, -1, -1])
