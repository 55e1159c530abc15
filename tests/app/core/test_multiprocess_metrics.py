"""Metrics of several worker processes summed through shared files (app.core.multiprocess_metrics):
the directory's life cycle, dead workers' live gauges dropped, and real processes recording
into one directory and one of them rendering the sum of all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.multiprocess_metrics import (
    MULTIPROCESS_ENV,
    forget_dead_workers,
    worker_metrics_directory,
)

ROOT = Path(__file__).resolve().parents[3]

# One worker: records `n` requests of status `status`, one of them still in flight, and the
# model info; then prints its pid. With RENDER set it prints its own /metrics body instead.
WORKER = """
import os, sys
from app.core.metrics import Metrics
m = Metrics(cuda=False)
n, status = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    m.observe_request("vis", "/v1/models/{name}/classify", status, 0.01 * (i + 1))
m.inflight.labels("vis").inc()
m.set_model_info("vis", 1, "plstm_vis_t", {"test": {"accuracy": 0.75}})
if os.environ.get("RENDER"):
    sys.stdout.write(m.render()[0].decode())
else:
    print(os.getpid())
"""


def _worker(directory: str, *args: str, render: bool = False) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), MULTIPROCESS_ENV: directory}
    if render:
        env["RENDER"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", WORKER, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_directory_exists_only_with_several_workers(monkeypatch) -> None:
    monkeypatch.setenv(MULTIPROCESS_ENV, "/somewhere/stale")
    with worker_metrics_directory(1) as none:
        assert none is None and MULTIPROCESS_ENV not in os.environ
    assert os.environ[MULTIPROCESS_ENV] == "/somewhere/stale"
    with worker_metrics_directory(3) as directory:
        assert directory is not None and os.environ[MULTIPROCESS_ENV] == directory
        assert Path(directory).is_dir() and not any(Path(directory).iterdir())
        (Path(directory) / "counter_1.db").write_bytes(b"x")
    assert not Path(directory).exists()
    assert os.environ[MULTIPROCESS_ENV] == "/somewhere/stale"


def test_dead_workers_lose_their_live_gauges_not_their_counters(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead, alive = int(finished.stdout), os.getpid()
    names = [
        f"gauge_livesum_{dead}.db",
        f"gauge_liveall_{dead}.db",
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        f"gauge_livesum_{alive}.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert forget_dead_workers(str(tmp_path)) == [dead]
    left = sorted(p.name for p in tmp_path.iterdir())
    kept = [f"counter_{dead}.db", f"histogram_{dead}.db", f"gauge_livesum_{alive}.db"]
    assert left == sorted(kept)
    assert forget_dead_workers(str(tmp_path)) == []


def test_every_worker_renders_the_sum_of_all(tmp_path: Path) -> None:
    directory = str(tmp_path)
    first = int(_worker(directory, "3", "200"))
    second = int(_worker(directory, "2", "503"))
    assert first != second
    # a third worker, alive while it renders: its own series plus the two finished ones
    samples = _samples(_worker(directory, "4", "200", render=True))
    classify = "/v1/models/{name}/classify"
    ok = (("endpoint", classify), ("model", "vis"), ("status", "200"))
    busy = (("endpoint", classify), ("model", "vis"), ("status", "503"))
    assert samples[("plstm_requests_total", ok)] == 7.0
    assert samples[("plstm_requests_total", busy)] == 2.0
    timed = (("endpoint", classify), ("model", "vis"))
    assert samples[("plstm_request_duration_seconds_count", timed)] == 9.0
    durations = [0.01 * i for i in (1, 2, 3, 1, 2, 1, 2, 3, 4)]
    assert samples[("plstm_request_duration_seconds_sum", timed)] == pytest.approx(sum(durations))
    # the finished workers are dead: only the renderer's own request is in flight
    assert samples[("plstm_inflight_requests", (("model", "vis"),))] == 1.0
    info = (("architecture", "plstm_vis_t"), ("model", "vis"), ("version", "1"))
    assert samples[("plstm_model_info", info)] == 1.0
    accuracy = (("metric", "test/accuracy"), ("model", "vis"))
    assert samples[("plstm_model_eval_metric", accuracy)] == 0.75
    rendered = _worker(directory, "0", "200", render=True)
    names = [f.name for f in text_string_to_metric_families(rendered)]
    assert len(names) == len(set(names)), "a family exposed twice"
