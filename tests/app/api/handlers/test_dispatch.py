"""One handler per declared model kind (app.api.handlers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.api.handlers import GRAPHS, HANDLERS, IMAGES, handler_for
from models.capabilities import KINDS


@pytest.mark.parametrize(("kind", "handler"), [("image", IMAGES), ("graph", GRAPHS)])
def test_handler_for_picks_by_the_entry_kind(kind: str, handler: object) -> None:
    assert handler_for(SimpleNamespace(kind=kind)) is handler  # type: ignore[arg-type]


def test_every_kind_a_model_can_declare_has_its_handler() -> None:
    assert set(HANDLERS) == set(KINDS)
    assert all(handler.kind == kind for kind, handler in HANDLERS.items())


@pytest.mark.parametrize(
    ("config", "expected"),
    [({}, ["probabilities", "logits"]), ({"task": "regression"}, ["values"])],
)
def test_v2_outputs_follow_the_task(config: dict, expected: list[str]) -> None:
    entry = SimpleNamespace(config=config)
    assert IMAGES.v2_outputs(entry) == expected  # type: ignore[arg-type]
