"""The OpenAPI document against the real server: Schemathesis (its CLI, every phase and every
check, deterministic generation) sends at least 1,000 generated requests to ``plstm serve``
(with an API key, so that the key's documentation is checked too) and finds nothing: every
answer has a documented status, media type, headers and body, schema-valid requests are
accepted and invalid ones rejected. What JSON Schema cannot say (a real image, a valid
molecule, a tensor as long as its shape) comes from :mod:`tests.app.schemathesis_hooks`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.model_repo import make_repository
from tests.app.real_server import running_server

pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "schemathesis-key"
MIN_CASES = 1000
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], str]]:
    """The JSON report of one Schemathesis run, and its console output."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    repo = make_repository(tmp / "model_repository")
    env = {"PLSTM_API_KEY": API_KEY, "PLSTM_WARMUP": "false"}
    with running_server(repo, tmp / "server.log", env) as base:
        path = tmp / "report.json"
        command = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json"]
        command += ["--checks", "all", "--generation-deterministic", "--continue-on-failure"]
        command += ["--max-examples", "20", "--workers", "1", "--no-color"]
        command += ["--header", f"Authorization: Bearer {API_KEY}"]
        command += ["--report", "json", "--report-json-path", str(path)]
        environ = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SCHEMATHESIS_HOOKS": "tests.app.schemathesis_hooks",
        }
        run = subprocess.run(
            command,
            cwd=tmp,
            env=environ,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        output = run.stdout + run.stderr
        assert path.is_file(), output[-4000:]
        yield json.loads(path.read_text()), output


def test_no_failure(report: tuple[dict[str, Any], str]) -> None:
    result, output = report
    assert result["failures"] == [] and result["errors"] == [], output[-6000:]
    assert result["exit_code"] == 0 and result["complete"], output[-6000:]


def test_every_operation_and_phase_ran(report: tuple[dict[str, Any], str]) -> None:
    result, _ = report
    operations = result["operations"]
    assert operations["tested"] == operations["total"] == 22
    assert {name for name, phase in result["phases"].items() if phase["status"] == "success"} == {
        "examples",
        "coverage",
        "fuzzing",
        "stateful",
    }


def test_at_least_1000_cases(report: tuple[dict[str, Any], str]) -> None:
    result, _ = report
    assert result["test_cases"]["generated"] >= MIN_CASES
