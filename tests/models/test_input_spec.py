"""The one rule for the size an image checkpoint was trained at."""

from __future__ import annotations

from typing import Any

import pytest

from models.input_spec import native_image_size


@pytest.mark.parametrize(
    "spec, config, expected",
    [
        ({"height": 96, "width": 64}, {"img_size": 32}, (96, 64)),
        ({"height": 96}, {"img_size": 32}, (96, 32)),
        (None, {"img_size": 48}, (48, 48)),
        ("not a spec", {"img_size": 48}, (48, 48)),
        ({"width": 40, "height": 24}, None, (24, 40)),
    ],
)
def test_the_input_spec_wins_over_the_config(spec: Any, config: Any, expected: tuple) -> None:
    assert native_image_size(spec, config) == expected


@pytest.mark.parametrize(
    "spec, config, match",
    [
        ({}, {}, "records no image height"),
        ({"height": 32}, None, "records no image width"),
        ({"height": 0, "width": 32}, None, "height must be a positive integer, got 0"),
        ({"height": 32, "width": 32.5}, None, "width must be a positive integer, got 32.5"),
        ({"height": True, "width": 32}, None, "height must be a positive integer, got True"),
    ],
)
def test_missing_or_bad_sizes_are_named(spec: Any, config: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        native_image_size(spec, config)
