"""The server's life as the routes read it: which requests are refused and why."""

from __future__ import annotations

import pytest

from app.serving.server_state import SHUTTING_DOWN, STARTING, ServerState


@pytest.mark.parametrize(
    "ready, draining, refusal",
    [(False, False, STARTING), (True, False, None), (True, True, SHUTTING_DOWN)],
)
def test_refusal_names_the_phase(ready: bool, draining: bool, refusal: str | None) -> None:
    assert ServerState({("m", 1): object()}, ready, draining).refusal() == refusal


def test_serving_needs_a_runtime() -> None:
    assert not ServerState({}, ready=True).serving
    assert ServerState({("m", 1): object()}, ready=True).serving


@pytest.mark.parametrize("key, expected", [(("m", 1), True), (("m", 2), False)])
def test_serves_only_versions_with_a_runtime(key: tuple[str, int], expected: bool) -> None:
    assert ServerState({("m", 1): object()}, ready=True).serves(*key) is expected


def test_stop_refuses_every_request_from_then_on() -> None:
    state = ServerState({("m", 1): object()}, ready=True)
    state.stop()
    assert (state.ready, state.draining, state.refusal()) == (False, True, SHUTTING_DOWN)
    assert not state.serving and not state.serves("m", 1)
