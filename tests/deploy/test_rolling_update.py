"""deploy/rolling-update.sh against a stand-in ``docker``: new replicas first, old ones stopped
only once every new one is healthy; a failed rollout removes the new replicas again."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.deploy import fakes
from tests.deploy.tools import DEPLOY

SCRIPT = DEPLOY / "rolling-update.sh"


def _rollout(tmp_path: Path, old: list[str], new_health: list[str], *args: str, **env: str):
    state = tmp_path / "docker.json"
    containers = {c: {"running": True, "health": ["healthy"]} for c in old}
    state.write_text(json.dumps({"containers": containers, "new_health": new_health, "calls": []}))
    bin_dir = tmp_path / "bin"
    fakes.install(bin_dir, "docker", fakes.FAKE_DOCKER)
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_DOCKER_STATE": str(state),
            "ROLLOUT_POLL_S": "0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, json.loads(state.read_text())


def test_new_replicas_replace_the_old_ones(tmp_path: Path) -> None:
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml"]
    result, state = _rollout(tmp_path, ["a", "b"], ["starting", "starting", "healthy"], *files)
    assert result.returncode == 0, result.stderr
    assert sorted(state["containers"]) == ["new2", "new3"]
    calls = state["calls"]
    up = next(c for c in calls if "up" in c)
    assert up[:5] == ["compose", *files] and "api=4" in up and "--no-recreate" in up
    assert all(c[1:5] == files for c in calls if c[0] == "compose")
    stop = calls.index(next(c for c in calls if c[0] == "stop"))
    healthy_checks = [i for i, c in enumerate(calls) if c[0] == "inspect"]
    assert len(healthy_checks) == 6 and max(healthy_checks) < stop  # 3 polls x 2 new replicas
    assert calls[stop][3:] == ["a", "b"] and calls[stop + 1] == ["rm", "a", "b"]


def test_unhealthy_new_replica_rolls_back(tmp_path: Path) -> None:
    result, state = _rollout(tmp_path, ["a"], ["starting", "unhealthy"])
    assert result.returncode == 1 and "unhealthy" in result.stderr
    assert state["containers"] == {"a": {"running": True, "health": ["healthy"]}}


def test_timeout_rolls_back(tmp_path: Path) -> None:
    result, state = _rollout(tmp_path, ["a"], ["starting"], ROLLOUT_TIMEOUT_S="0")
    assert result.returncode == 1 and "not healthy after 0s" in result.stderr
    assert list(state["containers"]) == ["a"]


def test_nothing_running(tmp_path: Path) -> None:
    result, state = _rollout(tmp_path, [], ["healthy"])
    assert result.returncode == 1 and "no running api replica" in result.stderr
    assert not any("up" in c for c in state["calls"])
