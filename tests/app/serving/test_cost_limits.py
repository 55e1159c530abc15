"""Cost limits before a request is queued (app/serving/cost_limits.py): 413 naming the limit and
what fits, and ``path=auto`` never choosing a path that does not fit. Unit tests on the shipped
arrow model's architecture with a fixed profile, then the issue's reproducers through the
HTTP API on the shipped models (413 at once, memory of the process bounded)."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.core.settings import Settings, get_settings
from app.main import create_app
from app.serving.cost_formulas import Architecture, GraphBatch, ImageBatch, grid_forms_on
from app.serving.cost_limits import CostLimitExceeded, check_tokens, choose_path
from app.serving.cost_profile import CostProfile
from app.serving.repository import READY, ModelEntry

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "model_repository"
ARROW = SHIPPED / "arrow-pointing" / "1"
GIB = 2**30
PATHS = ("parallel", "recurrent", "chunkwise")
FORMS = grid_forms_on(torch.device("cpu"))
"""The CPU forms' implementation the server's cost model describes here: "native" with the C
kernels built (a C compiler on the machine), else "cpu"."""


def _arrow_entry(
    coefficients: dict[str, dict[str, float]] | None = None, budget: float = 2 * GIB
) -> ModelEntry:
    """The shipped arrow model's entry (without its weights) with a fixed cost profile."""
    meta = json.loads((ARROW / "config.json").read_text())
    config = meta["config"]
    entry = ModelEntry(
        name="arrow",
        version=1,
        directory=ARROW,
        state=READY,
        architecture=meta["architecture"],
        config=config,
    )
    entry.cost = CostProfile(
        arch=Architecture.from_config("plstm_vision", config),
        paths=PATHS,
        memory_budget=budget,
        coefficients=coefficients if coefficients is not None else {},
    )
    return entry


# seconds per unit of each time term, about what a 2-core CPU measures for this model
CPU_LIKE = {
    "parallel": {"call": 0.02, "dense": 2e-11, "mixer": 4e-11},
    "recurrent": {"call": 0.02, "steps": 4e-3, "work": 4e-11},
    "chunkwise": {"call": 0.02, "steps": 2e-3, "work": 2e-11},
}


def _choose(entry: ModelEntry, path: str, side: int, *, left_s: float = 30.0) -> str:
    return choose_path(
        entry,
        path,
        ImageBatch(1, side, side),
        remaining_s=left_s,
        max_tokens=65536,
        smaller="resize=model",
    )


def test_a_native_768px_image_on_the_parallel_path_is_refused_naming_what_fits() -> None:
    entry = _arrow_entry(CPU_LIKE)
    with pytest.raises(CostLimitExceeded) as refused:
        _choose(entry, "parallel", 96)
    assert refused.value.status_code == 413
    assert refused.value.message == (
        "image of 96x96 patches needs ~17 GB on path parallel, over the per-request memory "
        "budget of 2 GB (PLSTM_MAX_REQUEST_MEMORY_MB): use path=chunkwise or path=recurrent "
        "or resize=model"
    )


def test_auto_never_picks_a_path_over_the_memory_budget() -> None:
    entry = _arrow_entry(CPU_LIKE)
    assert entry.cost is not None
    assert not entry.cost.fits("parallel", ImageBatch(1, 96, 96))
    assert _choose(entry, "auto", 96) == "chunkwise"


def test_auto_keeps_the_parallel_path_for_small_images() -> None:
    assert _choose(_arrow_entry(CPU_LIKE), "auto", 12) == "parallel"


def test_auto_takes_a_clearly_faster_path() -> None:
    slow_parallel = {**CPU_LIKE, "parallel": {"call": 0.02, "dense": 2e-11, "mixer": 4e-8}}
    entry = _arrow_entry(slow_parallel)
    assert entry.cost is not None
    size = ImageBatch(1, 24, 24)
    seconds = {p: entry.cost.estimate(p, size).seconds for p in PATHS}
    assert seconds["parallel"] > 2 * seconds["chunkwise"]  # type: ignore[operator]
    assert _choose(entry, "auto", 24) == "chunkwise"


def _parallel_three_times_chunkwise(timed_tokens: int) -> ModelEntry:
    """The arrow entry with the parallel path predicted 3x the chunkwise one at 48x48 patches
    (both within the deadline) and every path timed up to ``timed_tokens`` tokens."""
    size = ImageBatch(1, 48, 48)
    base = {**CPU_LIKE, "parallel": {"call": 0.02, "dense": 2e-11, "mixer": 0.0}}
    probe = _arrow_entry(base).cost
    unit = _arrow_entry({"parallel": {"mixer": 1.0}}).cost
    assert probe is not None and unit is not None
    chunkwise_s = probe.estimate("chunkwise", size).seconds or 0.0
    base_s = probe.estimate("parallel", size).seconds or 0.0
    mixer = (3 * chunkwise_s - base_s) / (unit.estimate("parallel", size).seconds or 1.0)
    entry = _arrow_entry({**base, "parallel": {**base["parallel"], "mixer": mixer}})
    assert entry.cost is not None
    entry.cost.timed_tokens = dict.fromkeys(PATHS, timed_tokens)
    parallel_s = entry.cost.estimate("parallel", size).seconds
    assert parallel_s == pytest.approx(3 * chunkwise_s) and parallel_s < 30.0
    return entry


@pytest.mark.parametrize(
    ("timed_tokens", "expected"),
    [(48 * 48, "chunkwise"), (32 * 32, "parallel")],
    ids=["timed-at-that-size", "extrapolated"],
)
def test_auto_leaves_the_usual_path_only_on_predictions_within_the_timed_sizes(
    timed_tokens: int, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the usual choice at 48x48 patches is parallel (whichever CPU forms this machine has)
    monkeypatch.setenv("PLSTM_AUTO_CHUNKWISE_TOKENS", "3072")
    get_settings.cache_clear()
    try:
        assert _choose(_parallel_three_times_chunkwise(timed_tokens), "auto", 48) == expected
    finally:
        get_settings.cache_clear()


def test_the_timed_sizes_travel_with_the_profile() -> None:
    profile = _parallel_three_times_chunkwise(48 * 48).cost
    assert profile is not None
    again = CostProfile.from_meta(json.loads(json.dumps(profile.to_meta())))
    assert again.timed_tokens == dict.fromkeys(PATHS, 48 * 48)
    assert again.measured_range("parallel", ImageBatch(1, 48, 48))
    assert not again.measured_range("parallel", ImageBatch(1, 49, 48))


def test_without_timings_auto_falls_back_to_chunkwise_when_the_usual_path_does_not_fit() -> None:
    entry = _arrow_entry(coefficients=None, budget=0.5 * GIB)
    assert _choose(entry, "auto", 12) == "parallel"
    assert _choose(entry, "auto", 48) == "chunkwise"  # parallel would need ~1.1 GB


def test_a_path_slower_than_the_deadline_is_refused_naming_a_faster_one() -> None:
    entry = _arrow_entry(CPU_LIKE)
    with pytest.raises(CostLimitExceeded) as refused:  # recurrent ~6.4 s, chunkwise ~2.6 s
        _choose(entry, "recurrent", 48, left_s=5.0)
    message = refused.value.message
    assert message.startswith("image of 48x48 patches needs ~6.4 s on path recurrent, over the")
    assert message.endswith(
        "5 s left to the request's deadline (PLSTM_REQUEST_TIMEOUT_S / X-Request-Timeout): "
        "use path=chunkwise or resize=model"
    )


def test_an_image_no_path_can_run_is_refused_with_the_cheapest_prediction() -> None:
    entry = _arrow_entry(CPU_LIKE, budget=0.1 * GIB)
    with pytest.raises(CostLimitExceeded) as refused:
        _choose(entry, "auto", 96)
    message = refused.value.message
    assert message.startswith("image of 96x96 patches fits no inference path: it needs ~17 GB ")
    for path in PATHS:  # every path's problem is named
        assert f"on path {path}, over the per-request memory budget of 102 MB" in message
    assert message.endswith(": use resize=model")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (
            ImageBatch(1, 500, 500),
            "image of 500x500 patches (250000 tokens) is over PLSTM_MAX_TOKENS = 65536: "
            "use resize=model",
        ),
        (
            GraphBatch(64, 64, 70000, 70000, 70000, 1000, 1000),
            "64 graphs of 70000 atoms (70000 atoms) is over PLSTM_MAX_TOKENS = 65536: "
            "use resize=model",
        ),
    ],
)
def test_too_many_tokens_are_refused(size: ImageBatch | GraphBatch, expected: str) -> None:
    with pytest.raises(CostLimitExceeded) as refused:
        check_tokens(size, 65536, "resize=model")
    assert refused.value.message == expected


def test_an_unavailable_path_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="path 'onnx' is not available"):
        _choose(_arrow_entry(CPU_LIKE), "onnx", 12)


# --- the reproducers, through the HTTP API -------------------------------------------------

BUDGET_MB = 16
ANSWER_S = 2.0
"""Issue 11 bounds the answer to a request over a limit at a second on the server
(docs/benchmarks/cost_limits_cpu2.md measures 0.02-0.8 s); the test allows twice that, since
CI runs it beside another test process on two cores (once measured at 1.3 s there). Before the
limits the same requests took minutes or 15 GB."""
RSS_GROWTH_BYTES = 300 * 2**20


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(
        model_repository=SHIPPED, device="cpu", warmup=False, max_request_memory_mb=BUDGET_MB
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _refused(response, started: float) -> str:
    elapsed = time.perf_counter() - started
    assert response.status_code == 413, response.text
    assert elapsed < ANSWER_S, elapsed
    return response.json()["error"]


def test_reproducer_768px_white_png_native_parallel(client: TestClient) -> None:
    data = _png(768)
    assert len(data) < 4096
    before = _rss()
    started = time.perf_counter()
    response = client.post(
        "/v1/models/arrow-pointing/classify?resize=native&path=parallel",
        content=data,
        headers={"content-type": "image/png"},
    )
    message = _refused(response, started)
    # the summed gating matrix: 3 heads x 9216² entries x 4 bytes x 2 (native: G and the
    # scores) or x 4.5 (PyTorch form: padded, with the merge temporaries)
    gb = {"native": 2, "cpu": 4}[FORMS]
    assert re.match(rf"image of 96x96 patches needs ~{gb}\.\d+ GB on path parallel, over", message)
    assert message.endswith("use resize=model")  # chunkwise is over 16 MB too
    assert _rss() - before < RSS_GROWTH_BYTES


def test_reproducer_4000px_png_native(client: TestClient) -> None:
    data = _png(4000)
    before = _rss()
    started = time.perf_counter()
    response = client.post(
        "/v1/models/arrow-pointing/classify?resize=native",
        content=data,
        headers={"content-type": "image/png"},
    )
    message = _refused(response, started)
    assert message == (
        "image of 500x500 patches (250000 tokens) is over PLSTM_MAX_TOKENS = 65536: "
        "use resize=model"
    )
    assert _rss() - before < RSS_GROWTH_BYTES


def test_reproducer_large_tensor_through_v2_infer(client: TestClient) -> None:
    side = 192
    body = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": [1, side, side, 3],
                "data": [255] * (side * side * 3),
            }
        ],
        "parameters": {"path": "parallel"},
    }
    payload = json.dumps(body).encode()
    before = _rss()
    started = time.perf_counter()
    response = client.post(
        "/v2/models/arrow-pointing/infer",
        content=payload,
        headers={"content-type": "application/json"},
    )
    message = _refused(response, started)
    mb = {"native": "17.6", "cpu": "27.1"}[FORMS]
    assert message.startswith(f"image of 24x24 patches needs ~{mb} MB on path parallel, over the")
    assert "per-request memory budget of 16 MB (PLSTM_MAX_REQUEST_MEMORY_MB)" in message
    assert message.endswith("use a smaller image")
    assert _rss() - before < RSS_GROWTH_BYTES


def test_the_model_answers_normally_after_the_refusals(client: TestClient) -> None:
    response = client.post(
        "/v1/models/arrow-pointing/classify",
        content=_png(96),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "parallel"
