"""End to end on a Docker engine, through the Docker SDK for Python: build the image, start the
compose stack, wait until it is ready, classify one image and predict one molecule through the
proxy, read the server's request counts back from Prometheus, tear everything down.

Runs wherever a Docker engine answers (the GPU build where the engine has the NVIDIA runtime,
else the CPU build of docker-compose.cpu.yml; PLSTM_E2E_VARIANT=gpu|cpu chooses); skipped with
the reason elsewhere, as in CI, which has no engine. The first build downloads base images and
torch and takes many minutes.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator

import docker
import httpx
import pytest
from PIL import Image

from tests.deploy.tools import DASHBOARD, ROOT, compose_args, compose_config, compose_env, run

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 900
SCRAPE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}: {exc})")
    yield client
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, timeout: float, probe) -> object:
    """Call ``probe`` every 2 s until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(2)
    pytest.fail(f"{what} not reached in {timeout:.0f} s (last: {last!r})")


@pytest.fixture(scope="module")
def stack(
    engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    variant = os.environ.get("PLSTM_E2E_VARIANT") or (
        "gpu" if "nvidia" in engine.info().get("Runtimes", {}) else "cpu"
    )
    cpu = variant == "cpu"
    tag = f"e2e-{uuid.uuid4().hex[:8]}"
    ports = {name: _free_port() for name in ("API", "PROMETHEUS", "GRAFANA")}
    env_lines = f"DEPLOY_IMAGE_TAG={tag}\n" + "".join(
        f"DEPLOY_{name}_PORT={port}\n" for name, port in ports.items()
    )
    env_file = tmp_path_factory.mktemp("e2e") / "e2e.env"
    env_file.write_text(env_lines)
    api = compose_config(env_file.parent, cpu=cpu, env_lines=env_lines)["services"]["api"]

    # the image, built by the SDK with the compose file's build arguments and tag
    engine.images.build(
        path=str(ROOT),
        dockerfile=api["build"]["dockerfile"],
        buildargs=api["build"].get("args", {}),
        tag=api["image"],
        rm=True,
        forcerm=True,
        timeout=3600,
    )
    project = f"plstm-{tag}"
    compose = [*compose_args(cpu=cpu, env_file=env_file), "-p", project]
    try:
        # waits for a healthy api before it starts the proxy: models load and warm up first
        started = run(
            [*compose, "up", "-d", "--no-build"], env=compose_env(), timeout=READY_TIMEOUT_S
        )
        assert started.returncode == 0, started.stderr
        yield {"engine": engine, "project": project, "ports": ports, "cpu": cpu}
    finally:
        run(
            [*compose, "down", "--volumes", "--remove-orphans", "--timeout", "60"],
            env=compose_env(),
            timeout=300,
        )
        engine.images.remove(api["image"], force=True)


def _api_health(engine: docker.DockerClient, project: str) -> list[str]:
    containers = engine.containers.list(
        filters={
            "label": [f"com.docker.compose.project={project}", "com.docker.compose.service=api"]
        }
    )
    return [c.attrs["State"].get("Health", {}).get("Status", "none") for c in containers]


def _png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_stack_serves_and_is_scraped(stack: dict) -> None:
    engine, project, ports = stack["engine"], stack["project"], stack["ports"]
    api_url = f"http://127.0.0.1:{ports['API']}"
    prometheus_url = f"http://127.0.0.1:{ports['PROMETHEUS']}"

    _wait(
        "a healthy api container",
        READY_TIMEOUT_S,
        lambda: _api_health(engine, project) == ["healthy"],
    )
    _wait(
        "readiness through the proxy",
        60,
        lambda: httpx.get(f"{api_url}/v2/health/ready", timeout=5).status_code == 200,
    )

    models = httpx.get(f"{api_url}/v1/models", timeout=10).json()["models"]
    image_model = next(m for m in models if m["kind"] == "image" and m["ready"])
    graph_model = next(m for m in models if m["kind"] == "graph" and m["ready"])

    spec = image_model["input"]
    files = {"image": ("x.png", _png(spec["height"], spec["width"]), "image/png")}
    classified = httpx.post(
        f"{api_url}/v1/models/{image_model['name']}/classify", files=files, timeout=60
    )
    assert classified.status_code == 200, classified.text
    predictions = classified.json()["predictions"]
    assert {p["label"] for p in predictions} <= set(image_model["labels"])

    predicted = httpx.post(
        f"{api_url}/v1/models/{graph_model['name']}/predict",
        json={"graphs": [{"smiles": "CCO"}]},
        timeout=60,
    )
    assert predicted.status_code == 200, predicted.text

    # the server's /metrics, read through Prometheus: both requests, counted by endpoint
    def scraped() -> dict[str, float]:
        answer = httpx.get(
            f"{prometheus_url}/api/v1/query",
            params={"query": 'sum by (endpoint) (plstm_requests_total{status="200"})'},
            timeout=10,
        ).json()
        counts = {
            r["metric"].get("endpoint", ""): float(r["value"][1]) for r in answer["data"]["result"]
        }
        wanted = ("/v1/models/{name}/classify", "/v1/models/{name}/predict")
        return counts if all(counts.get(e, 0) >= 1 for e in wanted) else {}

    counts = _wait("the request counts in Prometheus", SCRAPE_TIMEOUT_S, scraped)
    assert counts["/v1/models/{name}/classify"] >= 1
    up = httpx.get(
        f"{prometheus_url}/api/v1/query", params={"query": 'up{job="plstm-api"}'}, timeout=10
    ).json()["data"]["result"]
    assert [r["value"][1] for r in up] == ["1"]
    if not stack["cpu"]:
        gpu = httpx.get(
            f"{prometheus_url}/api/v1/query", params={"query": "plstm_gpu_memory_bytes"}, timeout=10
        ).json()["data"]["result"]
        assert gpu, "the GPU image does not see a GPU"

    # Grafana has the dashboard from the provisioning files
    dashboard = json.loads(DASHBOARD.read_text())
    grafana_url = f"http://127.0.0.1:{ports['GRAFANA']}"
    found = _wait(
        "the provisioned Grafana dashboard",
        SCRAPE_TIMEOUT_S,
        lambda: (
            httpx.get(
                f"{grafana_url}/api/dashboards/uid/{dashboard['uid']}",
                auth=("admin", "admin"),
                timeout=10,
            ).status_code
            == 200
        ),
    )
    assert found
