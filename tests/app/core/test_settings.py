"""Settings from PLSTM_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.settings import Settings, get_settings, model_process_threads


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.upper().startswith("PLSTM_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults() -> None:
    s = Settings()
    assert (s.port, s.workers, s.device) == (8000, 1, "auto")
    assert s.model_repository == Path("model_repository")
    assert (s.max_batch_size, s.max_delay_ms, s.max_queue_size) == (32, 0.0, 256)
    assert s.request_timeout_s == 30.0 and s.max_body_bytes == 16 * 1024 * 1024
    assert s.max_image_pixels == 4096 * 4096 and s.max_atoms == 500
    assert s.max_graphs_per_request == 64 and s.auto_chunkwise_tokens is None
    assert s.api_key is None and s.onnx is False and s.warmup is True and s.log_level == "info"
    assert s.torch_threads == 0


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PLSTM_HOST": "127.0.0.1",
        "PLSTM_PORT": "9123",
        "PLSTM_WORKERS": "3",
        "PLSTM_MODEL_REPOSITORY": "/srv/models",
        "PLSTM_DEVICE": "cpu",
        "PLSTM_MAX_BATCH_SIZE": "7",
        "PLSTM_MAX_DELAY_MS": "2.5",
        "plstm_max_queue_size": "11",
        "PLSTM_REQUEST_TIMEOUT_S": "4",
        "PLSTM_MAX_BODY_BYTES": "1000",
        "PLSTM_MAX_IMAGE_PIXELS": "640000",
        "PLSTM_MAX_ATOMS": "99",
        "PLSTM_MAX_GRAPHS_PER_REQUEST": "5",
        "PLSTM_API_KEY": "s3cret",
        "PLSTM_ONNX": "true",
        "PLSTM_AUTO_CHUNKWISE_TOKENS": "256",
        "PLSTM_LOG_LEVEL": "DEBUG",
        "PLSTM_WARMUP": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = get_settings()
    assert get_settings() is s  # cached
    assert (s.host, s.port, s.workers, s.device) == ("127.0.0.1", 9123, 3, "cpu")
    assert s.model_repository == Path("/srv/models")
    assert (s.max_batch_size, s.max_delay_ms, s.max_queue_size) == (7, 2.5, 11)
    assert (s.request_timeout_s, s.max_body_bytes, s.max_image_pixels) == (4.0, 1000, 640000)
    assert (s.max_atoms, s.max_graphs_per_request, s.auto_chunkwise_tokens) == (99, 5, 256)
    assert s.api_key.get_secret_value() == "s3cret" and "s3cret" not in repr(s)
    assert s.onnx is True and s.warmup is False and s.log_level == "debug"


def test_empty_api_key_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLSTM_API_KEY", "")
    assert Settings().api_key is None


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("PLSTM_DEVICE", "tpu", "device"),
        ("PLSTM_PORT", "70000", "port"),
        ("PLSTM_MAX_BATCH_SIZE", "0", "max_batch_size"),
        ("PLSTM_LOG_LEVEL", "loud", "log_level"),
        ("PLSTM_WORKERS", "many", "workers"),
    ],
)
def test_invalid_values(monkeypatch: pytest.MonkeyPatch, key: str, value: str, field: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


@pytest.mark.parametrize(("value", "expected"), [("", None), ("1200", 1200)])
def test_max_smiles_chars_unset_or_set(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None
) -> None:
    monkeypatch.setenv("PLSTM_MAX_SMILES_CHARS", value)
    assert Settings().max_smiles_chars == expected


def test_every_field_is_documented() -> None:
    for name, info in Settings.model_fields.items():
        assert info.description and len(info.description) > 15, name


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, 8),
        ({"workers": 4, "engine": "inline"}, 2),
        ({"workers": 3, "engine": "inline"}, 2),
        ({"workers": 4}, 8),
        ({"workers": 16, "engine": "inline"}, 1),
        ({"engine": "process"}, 8),
        ({"torch_threads": 3, "workers": 4, "engine": "inline"}, 3),
    ],
    ids=["one-worker", "inline-4", "inline-3", "engine-4", "inline-16", "engine-1", "explicit"],
)
def test_model_processes_share_the_cores(
    monkeypatch: pytest.MonkeyPatch, settings: dict, expected: int
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert model_process_threads(Settings(**settings)) == expected
