"""``plstm serve`` / ``python -m app.cli serve`` argument handling (uvicorn not started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from app import cli
from app.core.settings import get_settings
from plstm_cli import main as plstm_main


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    for key in cli.FLAG_SETTINGS:  # registered so the flags written by serve are undone
        monkeypatch.setenv(f"PLSTM_{key.upper()}", "")
        monkeypatch.delenv(f"PLSTM_{key.upper()}")
    yield calls
    get_settings.cache_clear()


def test_flags_override_environment(
    captured: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLSTM_PORT", "9000")
    monkeypatch.setenv("PLSTM_HOST", "127.0.0.9")
    argv = ["serve", "--port", "9100", "--model-repository", str(tmp_path), "--device", "cpu"]
    assert cli.main(argv) == 0
    assert captured["app"] == "app.cli:create_logged_app" and captured["factory"] is True
    assert (captured["host"], captured["port"], captured["workers"]) == ("127.0.0.9", 9100, 1)
    assert get_settings().model_repository == tmp_path
    assert get_settings().device == "cpu"


def test_plstm_serve_is_wired(captured: dict[str, Any], tmp_path: Path) -> None:
    argv = ["serve", "--model-repository", str(tmp_path), "--log-level", "warning"]
    assert plstm_main.main(argv) == 0
    assert captured["log_level"] == "warning"


def test_bad_settings_exit_2(captured: dict[str, Any], tmp_path: Path) -> None:
    assert cli.main(["serve", "--model-repository", str(tmp_path / "missing")]) == 2
    assert cli.main(["serve", "--model-repository", str(tmp_path), "--port", "0"]) == 2
    assert not captured


def test_plstm_cli_does_not_import_app() -> None:
    code = "import sys, plstm_cli.main; print(any(m.split('.')[0] == 'app' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
