"""Uploads and inference-protocol pixel tensors → model inputs (app.api.image_inputs)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from app.api.body_decoding import DecodedTensor
from app.api.image_inputs import images_from_tensor
from app.api.schemas.v2 import RequestInput
from app.api.tensor_inputs import InvalidTensor, InvalidTensorValue
from app.serving.images import ImageSpec, ImageTooLarge, load_image


def _tensor(**fields) -> DecodedTensor:
    return DecodedTensor.of(RequestInput(**fields))


SPEC = ImageSpec(height=16, width=16, patch_size=8, grayscale=True)


def _pixel_tensor(pixels: np.ndarray, datatype: str, layout: str = "NCHW") -> DecodedTensor:
    if layout == "NHWC":
        pixels = pixels.transpose(0, 2, 3, 1)
    return _tensor(
        name="images", shape=list(pixels.shape), datatype=datatype, data=pixels.ravel().tolist()
    )


def test_uint8_tensor_matches_the_upload_path_in_both_layouts():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 3, 16, 24), dtype=np.uint8)
    nchw = images_from_tensor(_pixel_tensor(pixels, "UINT8"), SPEC)
    nhwc = images_from_tensor(_pixel_tensor(pixels, "UINT8", "NHWC"), SPEC)
    assert nchw.shape == (2, 3, 16, 24) and nchw.dtype == torch.float32
    torch.testing.assert_close(nchw, nhwc)
    for b in range(2):
        buf = io.BytesIO()
        Image.fromarray(pixels[b].transpose(1, 2, 0)).save(buf, "PNG")
        upload = load_image(buf.getvalue(), SPEC, resize="native").tensor
        torch.testing.assert_close(nchw[b], upload)


def test_fp32_tensor_is_model_input_unchanged():
    rng = np.random.default_rng(1)
    values = rng.random((1, 3, 8, 16)).astype(np.float32)
    out = images_from_tensor(_pixel_tensor(values, "FP32", "NHWC"), SPEC)
    torch.testing.assert_close(out, torch.from_numpy(values))


@pytest.mark.parametrize(
    ("value", "index"), [(3e38, 0), (-1.0, 0), (1.01, 0), (0.5, None), (1.0005, None)]
)
def test_fp32_values_must_be_in_the_model_input_range(value: float, index: int | None):
    values = np.full((1, 3, 8, 8), 0.5, dtype=np.float32)
    values[0, 0, 0, 0] = value
    tensor = _pixel_tensor(values, "FP32")
    if index is None:  # inside the range, or outside by less than the rounding slack
        assert images_from_tensor(tensor, SPEC).shape == (1, 3, 8, 8)
        return
    with pytest.raises(InvalidTensorValue) as err:
        images_from_tensor(tensor, SPEC)
    assert err.value.status_code == 422
    assert err.value.message == (
        f"input 'images': data[{index}] = {value:.7g} is outside the model's input range [0, 1]"
    )


@pytest.mark.parametrize(
    ("shape", "datatype", "limits", "expected"),
    [
        ((1, 3, 12, 16), "UINT8", {},
         "images are 12x16 (HxW); both sides must be positive multiples of the patch size 8"),
        ((1, 4, 16, 5), "UINT8", {}, "has no axis of 3 channels"),
        ((3, 16, 16), "UINT8", {}, "expected [B,3,H,W] (NCHW)"),
        ((1, 3, 8, 8), "INT64", {}, "image models take FP32 or UINT8"),
        ((3, 3, 8, 8), "UINT8", {"max_batch": 2}, "batch of 3 exceeds"),
    ],
)  # fmt: skip
def test_bad_image_tensor_is_a_400_naming_the_problem(
    shape: tuple[int, ...], datatype: str, limits: dict, expected: str
) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, shape)
    with pytest.raises(InvalidTensor) as err:
        images_from_tensor(_pixel_tensor(pixels, datatype), SPEC, **limits)
    assert expected in err.value.message and err.value.status_code == 400


def test_image_tensor_over_the_pixel_limit_is_a_413() -> None:
    big = np.random.default_rng(3).integers(0, 256, (1, 3, 16, 24))
    with pytest.raises(ImageTooLarge, match="384 pixels per image exceed the limit of 383") as err:
        images_from_tensor(_pixel_tensor(big, "UINT8"), SPEC, max_pixels=383)
    assert err.value.status_code == 413
