"""The input spec and preprocessing an image checkpoint records (config.json ``input`` and
``preprocessing``): written by training, read by the model server."""

from __future__ import annotations

from typing import Any


def grayscale_image_spec(
    resolution: int, patch_size: int, **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input_spec, preprocessing) for a model trained on grayscale images of
    ``resolution``² pixels fed as 3 equal channels in [0, 1] (black 0, white 1).

    The model takes any size that is a multiple of ``patch_size``; ``extra`` entries (e.g.
    ``extrapolation_size``) are added to the input spec.
    """
    input_spec = {
        "kind": "image",
        "layout": "CHW",
        "channels": 3,
        "height": resolution,
        "width": resolution,
        "patch_size": patch_size,
        "size_multiple": patch_size,
        **extra,
        "dtype": "float32",
        "value_range": [0.0, 1.0],
    }
    preprocessing = {
        "color": "grayscale",
        "replicate_channels": 3,
        "rescale": 1.0 / 255.0,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "resize": "bicubic",
    }
    return input_spec, preprocessing
