"""The input a checkpoint was trained on, read one way by every reader (the exporter, the
server's preprocessing, warm-up and cost calibration)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def native_image_size(input_spec: Any, config: Mapping[str, Any] | None) -> tuple[int, int]:
    """(H, W) in pixels an image checkpoint was trained at: its input spec's ``height`` /
    ``width`` (as training records them), else the model config's ``img_size``. ValueError
    naming what is missing or not a positive integer."""
    spec = input_spec if isinstance(input_spec, Mapping) else {}
    size = (config or {}).get("img_size")
    sides = {"height": spec.get("height", size), "width": spec.get("width", size)}
    for key, value in sides.items():
        if value is None:
            raise ValueError(f"checkpoint records no image {key} (input spec or config)")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"image {key} must be a positive integer, got {value!r}")
    return sides["height"], sides["width"]
