"""``path=auto``'s usual threshold between the parallel and the chunkwise form
(:func:`app.serving.backends.auto_chunkwise_limit`): the setting when set, else by the forms
the grid layers run on the device."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from app.core.settings import get_settings
from app.serving import backends
from app.serving.backends import CHUNKWISE_TOKENS, NATIVE_CHUNKWISE_TOKENS, auto_chunkwise_limit


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PLSTM_AUTO_CHUNKWISE_TOKENS", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("forms", "autograd", "expected"),
    [
        ("native", False, NATIVE_CHUNKWISE_TOKENS),
        ("native", True, CHUNKWISE_TOKENS),
        ("cpu", False, CHUNKWISE_TOKENS),
        ("reference", False, CHUNKWISE_TOKENS),
    ],
)
def test_unset_threshold_follows_the_grid_forms(
    forms: str, autograd: bool, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "grid_forms_on", lambda device: forms)
    assert auto_chunkwise_limit(torch.device("cpu"), autograd=autograd) == expected


@pytest.mark.parametrize("autograd", [False, True])
def test_configured_threshold_wins(autograd: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLSTM_AUTO_CHUNKWISE_TOKENS", "777")
    get_settings.cache_clear()
    assert auto_chunkwise_limit(torch.device("cpu"), autograd=autograd) == 777


def test_meta_device_runs_the_pytorch_forms() -> None:
    assert auto_chunkwise_limit(torch.device("meta")) == CHUNKWISE_TOKENS


def test_empty_setting_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLSTM_AUTO_CHUNKWISE_TOKENS", " ")
    get_settings.cache_clear()
    assert get_settings().auto_chunkwise_tokens is None
