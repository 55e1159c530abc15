"""Image decoding and preprocessing (app.serving.images): formats, modes, guards, both resize
modes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from app.serving.images import (
    INLINE_DECODE_PIXELS,
    CorruptImage,
    ImageSpec,
    ImageTooLarge,
    ImageTooSmall,
    UnsupportedImage,
    decode_image,
    decodes_quickly,
    load_image,
    preprocess_image,
)
from models import create_model, load_checkpoint, save_checkpoint
from models.image_spec import grayscale_image_spec


def _rgb(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


RGB_SPEC = ImageSpec(height=32, width=32, patch_size=8)
GRAY_SPEC = ImageSpec(height=32, width=32, patch_size=8, grayscale=True)


@pytest.mark.parametrize(
    ("fmt", "options", "content_type", "lossless"),
    [
        ("PNG", {}, "image/png", True),
        ("BMP", {}, "image/bmp", True),
        ("WEBP", {"lossless": True}, "image/webp", True),
        ("JPEG", {"quality": 95, "subsampling": 0}, "image/jpeg", False),
    ],
)
def test_formats_decode_to_their_pixels(fmt, options, content_type, lossless):
    rng = np.random.default_rng(1)
    pixels = _rgb(rng, 24, 40)
    if not lossless:  # JPEG: smooth content so the error is small
        pixels = np.repeat(np.repeat(pixels[::8, ::8], 8, 0), 8, 1)
    data = _encode(Image.fromarray(pixels), fmt, **options)
    image = decode_image(data, content_type)
    assert image.mode == "RGB" and image.size == (40, 24)
    got = np.asarray(image).astype(int)
    if lossless:
        np.testing.assert_array_equal(got, pixels)
    else:
        assert np.abs(got - pixels).mean() < 6


def test_grayscale_and_bilevel_modes():
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, size=(16, 24), dtype=np.uint8)
    image = decode_image(_encode(Image.fromarray(gray, "L"), "PNG"))
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), gray)

    bits = rng.integers(0, 2, size=(16, 24)).astype(bool)
    image = decode_image(_encode(Image.fromarray(bits).convert("1"), "BMP"))
    np.testing.assert_array_equal(np.asarray(image), np.where(bits, 255, 0))


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 65536, size=(16, 16), dtype=np.uint16)
    image = decode_image(_encode(Image.fromarray(values), "PNG"))
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), np.rint(values * (255 / 65535)))


def test_rgba_is_composited_on_white():
    rng = np.random.default_rng(4)
    rgba = np.concatenate([_rgb(rng, 8, 8), np.zeros((8, 8, 1), np.uint8)], axis=2)
    rgba[:4, :, 3] = 255  # top half opaque, bottom half transparent
    rgba[4:6, :, 3] = 128
    image = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    got = np.asarray(image).astype(int)
    assert image.mode == "RGB"
    np.testing.assert_array_equal(got[:4], rgba[:4, :, :3])
    np.testing.assert_array_equal(got[6:], 255)
    blend = (rgba[4:6, :, :3].astype(int) * 128 + 255 * 127) / 255
    assert np.abs(got[4:6] - blend).max() <= 1


def test_la_and_transparent_palette_are_composited_on_white():
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 200, size=(8, 8), dtype=np.uint8)
    alpha = np.where(rng.random((8, 8)) < 0.5, 0, 255).astype(np.uint8)
    la = Image.fromarray(np.stack([gray, alpha], axis=2), "LA")
    got = np.asarray(decode_image(_encode(la, "PNG")).convert("L"))
    np.testing.assert_array_equal(got, np.where(alpha == 0, 255, gray))

    indices = rng.integers(0, 4, size=(8, 8), dtype=np.uint8)
    palette = Image.fromarray(indices, "P")
    colours = [(10, 20, 30), (200, 0, 0), (0, 150, 0), (0, 0, 90)]
    palette.putpalette([c for rgb in colours for c in rgb])
    data = _encode(palette, "PNG", transparency=2)
    got = np.asarray(decode_image(data))
    expected = np.array(colours)[indices]
    expected[indices == 2] = 255
    np.testing.assert_array_equal(got, expected)


def test_palette_without_transparency():
    rng = np.random.default_rng(6)
    indices = rng.integers(0, 3, size=(8, 12), dtype=np.uint8)
    colours = rng.integers(0, 256, size=(3, 3))
    image = Image.fromarray(indices, "P")
    image.putpalette([int(c) for c in colours.ravel()])
    got = np.asarray(decode_image(_encode(image, "BMP")))
    np.testing.assert_array_equal(got, colours[indices])


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red
    got = np.asarray(decode_image(_encode(image, "JPEG", quality=95))).astype(int)
    assert got.shape == (16, 16, 3)
    assert got[..., 0].min() > 230 and got[..., 1:].max() < 30


def test_exif_orientation_is_applied():
    rng = np.random.default_rng(7)
    pixels = _rgb(rng, 10, 20)  # 20 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was rotated: display rotated 90° clockwise
    data = _encode(Image.fromarray(pixels), "PNG", exif=exif)
    image = decode_image(data)
    assert image.size == (10, 20)
    np.testing.assert_array_equal(np.asarray(image), np.rot90(pixels, k=-1))


def test_pixel_limit_and_decompression_bomb(monkeypatch):
    data = _encode(Image.new("L", (100, 80), 0), "PNG")
    assert decode_image(data, max_pixels=8000).size == (100, 80)
    with pytest.raises(ImageTooLarge, match="8000 pixels, more than the limit of 7999") as err:
        decode_image(data, max_pixels=7999)
    assert err.value.status_code == 413
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own guard fires first
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        decode_image(data, max_pixels=10**9)


def test_corrupt_and_empty_bytes():
    rng = np.random.default_rng(8)
    for data in (rng.bytes(300), b""):
        with pytest.raises(CorruptImage) as err:
            decode_image(data)
        assert err.value.status_code == 400
    png = _encode(Image.fromarray(_rgb(rng, 64, 64)), "PNG")
    with pytest.raises(CorruptImage, match="corrupt PNG image"):
        decode_image(png[: len(png) // 2])


def test_unsupported_format_and_content_type():
    gif = _encode(Image.new("P", (16, 16), 3), "GIF")
    with pytest.raises(UnsupportedImage, match="unsupported image format GIF") as err:
        decode_image(gif)
    assert err.value.status_code == 415
    png = _encode(Image.new("L", (16, 16), 9), "PNG")
    for content_type in ("image/gif", "application/pdf", "text/plain"):
        with pytest.raises(UnsupportedImage, match="unsupported content type"):
            decode_image(png, content_type)
    for content_type in ("IMAGE/PNG; charset=binary", "application/octet-stream", None, ""):
        assert decode_image(png, content_type).size == (16, 16)


@pytest.mark.parametrize("resize", ["model", "native"])
def test_smaller_than_one_patch(resize):
    image = Image.new("RGB", (7, 30), (1, 2, 3))
    with pytest.raises(ImageTooSmall, match="7x30 pixels, smaller than one 8x8 patch") as err:
        preprocess_image(image, RGB_SPEC, resize)
    assert err.value.status_code == 422


def test_resize_model_matches_pillow_bicubic():
    rng = np.random.default_rng(9)
    pixels = _rgb(rng, 50, 70)
    image = Image.fromarray(pixels)
    prepared = preprocess_image(image, RGB_SPEC, "model")
    assert prepared.size == (32, 32) and prepared.original_size == (50, 70)
    assert prepared.padding == (0, 0) and prepared.tensor.dtype == torch.float32
    expected = np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC)) / 255.0
    torch.testing.assert_close(prepared.tensor, torch.from_numpy(expected).permute(2, 0, 1).float())


def test_grayscale_spec_replicates_luminance():
    rng = np.random.default_rng(10)
    image = Image.fromarray(_rgb(rng, 32, 32))
    prepared = preprocess_image(image, GRAY_SPEC, "model")
    luminance = torch.from_numpy(np.asarray(image.convert("L")) / 255.0).float()
    assert prepared.tensor.shape == (3, 32, 32)
    for c in range(3):
        torch.testing.assert_close(prepared.tensor[c], luminance)


def test_resize_native_pads_white_to_the_patch_grid():
    rng = np.random.default_rng(11)
    pixels = _rgb(rng, 13, 21)
    spec = ImageSpec(height=32, width=32, patch_size=8, mean=(0.5, 0.4, 0.3), std=(0.5, 0.25, 0.2))
    prepared = load_image(_encode(Image.fromarray(pixels), "PNG"), spec, resize="native")
    assert prepared.size == (16, 24) and prepared.padding == (3, 3)
    mean = torch.tensor(spec.mean).reshape(3, 1, 1)
    std = torch.tensor(spec.std).reshape(3, 1, 1)
    raw = prepared.tensor * std + mean  # back to 0..1
    torch.testing.assert_close(
        raw[:, :13, :21], torch.from_numpy(pixels / 255.0).permute(2, 0, 1).float()
    )
    white = (1.0 - mean) / std
    torch.testing.assert_close(prepared.tensor[:, 13:, :], white.expand(3, 3, 24))
    torch.testing.assert_close(prepared.tensor[:, :, 21:], white.expand(3, 16, 3))


def test_resize_native_keeps_a_multiple_unchanged():
    rng = np.random.default_rng(12)
    gray = rng.integers(0, 256, size=(24, 40), dtype=np.uint8)
    prepared = preprocess_image(Image.fromarray(gray, "L"), GRAY_SPEC, "native")
    assert prepared.size == (24, 40) and prepared.padding == (0, 0)
    torch.testing.assert_close(prepared.tensor[1], torch.from_numpy(gray / 255.0).float())
    with pytest.raises(ValueError, match="resize must be one of"):
        preprocess_image(Image.fromarray(gray, "L"), GRAY_SPEC, "stretch")


def test_spec_from_training_records_and_validation():
    spec = ImageSpec.from_metadata(
        {"kind": "image", "channels": 3, "height": 96, "width": 96, "patch_size": 8},
        {
            "color": "grayscale",
            "rescale": 1 / 255,
            "mean": [0, 0, 0],
            "std": [1, 1, 1],
            "resize": "bicubic",
        },
    )
    assert (spec.height, spec.width, spec.patch_size, spec.grayscale) == (96, 96, 8, True)
    from_config = ImageSpec.from_metadata(None, None, {"img_size": 64, "patch_size": 16})
    assert (from_config.height, from_config.patch_size, from_config.grayscale) == (64, 16, False)
    with pytest.raises(ValueError, match="not an image model"):
        ImageSpec.from_metadata({"kind": "molecule"}, None)
    with pytest.raises(ValueError, match="records no image patch_size"):
        ImageSpec.from_metadata({"height": 32, "width": 32}, None)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        ImageSpec(height=30, width=32, patch_size=8)
    with pytest.raises(ValueError, match="std values must be positive"):
        ImageSpec(height=32, width=32, patch_size=8, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="color must be"):
        ImageSpec.from_metadata({"height": 32, "width": 32, "patch_size": 8}, {"color": "cmyk"})


def test_input_range_is_declared_or_follows_the_preprocessing():
    spec = {"height": 32, "width": 32, "patch_size": 8, "value_range": [-1, 2]}
    assert ImageSpec.from_metadata(spec, None).input_range() == (-1.0, 2.0)
    rgb = ImageSpec(height=8, width=8, patch_size=8, mean=(0.5, 0.0, 0.0), std=(0.5, 1.0, 2.0))
    assert rgb.input_range() == pytest.approx((-1.0, 1.0))
    with pytest.raises(ValueError, match="value_range must be two finite numbers"):
        ImageSpec(height=8, width=8, patch_size=8, value_range=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"input value_range must be \[low, high\]"):
        ImageSpec.from_metadata({**spec, "value_range": 1.0}, None)


def test_checkpoint_spec_feeds_the_model_at_native_size(tmp_path):
    torch.manual_seed(0)
    model = create_model(
        "plstm_vis_t", img_size=16, patch_size=8, num_classes=2, dim=16, depth=2, num_heads=2
    )
    input_spec, preprocessing = grayscale_image_spec(16, 8)
    save_checkpoint(
        model,
        tmp_path / "ckpt",
        name="plstm_vis_t",
        labels=["not_pointing", "pointing"],
        input_spec=input_spec,
        preprocessing=preprocessing,
    )
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    spec = ImageSpec.from_checkpoint(checkpoint)
    rng = np.random.default_rng(13)
    data = _encode(Image.fromarray(_rgb(rng, 20, 30)), "WEBP", lossless=True)
    native = load_image(data, spec, content_type="image/webp", resize="native")
    resized = load_image(data, spec, content_type="image/webp", resize="model")
    assert native.size == (24, 32) and resized.size == (16, 16)
    with torch.no_grad():
        for prepared in (native, resized):
            logits = checkpoint.model(prepared.tensor[None])
            assert logits.shape == (1, 2) and torch.isfinite(logits).all()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_decodes_quickly_reads_the_size_from_the_header(fmt: str) -> None:
    rng = np.random.default_rng(60)
    small = _encode(Image.fromarray(_rgb(rng, 96, 80)), fmt)
    assert decodes_quickly(small)
    assert not decodes_quickly(small, max_pixels=96 * 80 - 1)
    assert decodes_quickly(small, max_pixels=96 * 80)
    side = int(INLINE_DECODE_PIXELS**0.5) + 1
    large = _encode(Image.new("L", (side, side), 255), fmt)
    assert not decodes_quickly(large)


def test_decodes_quickly_leaves_bad_bytes_to_the_full_decode() -> None:
    png = _encode(Image.fromarray(_rgb(np.random.default_rng(61), 16, 16)), "PNG")
    gif = _encode(Image.new("L", (16, 16), 0), "GIF")
    for data in (b"", b"not an image", png[:20], gif):
        assert not decodes_quickly(data)
