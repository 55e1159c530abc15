"""The Grafana provisioning and the dashboard: valid JSON wired to the provisioned data source,
a panel for everything the deployment should show, PromQL that promtool parses, and every
``plstm_*`` metric and label it queries present in what the server (and the trainer) export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core.metrics import Metrics
from app.core.settings import Settings
from app.main import create_app
from tests.app.model_repo import IMG, make_repository, png_bytes
from tests.deploy.promql import Query
from tests.deploy.tools import DASHBOARD, GRAFANA_PROVISIONING, compose_config, run, tool
from training.monitor import TrainingMetrics

# labels Prometheus adds to every scraped series
TARGET_LABELS = {"instance", "job"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queries(dashboard: dict) -> list[Query]:
    return [
        Query(t["expr"], t.get("legendFormat", ""))
        for p in _panels(dashboard)
        for t in p["targets"]
    ]


def test_provisioning_points_at_the_dashboard_and_the_data_source(
    dashboard: dict, tmp_path: Path
) -> None:
    grafana = compose_config(tmp_path)["services"]["grafana"]
    mounts = {Path(v["source"]): v["target"] for v in grafana["volumes"] if v["type"] == "bind"}
    for kind in ("datasources", "dashboards"):
        assert mounts[GRAFANA_PROVISIONING / kind] == f"/etc/grafana/provisioning/{kind}"
    (provider,) = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "plstm.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert mounts[DASHBOARD.parent] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"

    (source,) = yaml.safe_load(
        (GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    used = {json.dumps(p["datasource"], sort_keys=True) for p in _panels(dashboard)}
    used |= {
        json.dumps(t["datasource"], sort_keys=True)
        for p in _panels(dashboard)
        for t in p["targets"]
    }
    used |= {json.dumps(v["datasource"], sort_keys=True) for v in dashboard["templating"]["list"]}
    assert used == {json.dumps({"type": "prometheus", "uid": source["uid"]}, sort_keys=True)}


def test_dashboard_structure(dashboard: dict) -> None:
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    for panel in _panels(dashboard):
        assert panel["title"] and panel["description"], panel["id"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_dashboard_shows_what_the_deployment_needs(dashboard: dict) -> None:
    queries = _queries(dashboard)

    def having(metric: str, *parts: str, grouped_by: set[str] = frozenset()) -> list[Query]:
        return [
            q
            for q in queries
            if metric in q.metrics()
            and all(p in q.expr for p in parts)
            and grouped_by <= q.grouping()
        ]

    assert having("plstm_requests_total", "rate(")  # request rate
    for quantile in ("0.5", "0.95", "0.99"):  # latency percentiles from the histogram
        assert having("plstm_request_duration_seconds_bucket", f"histogram_quantile({quantile},")
    assert having("plstm_batch_size_bucket") and having("plstm_batch_size_count")
    assert having("plstm_queue_depth")
    assert having("plstm_inference_duration_seconds_bucket", grouped_by={"path"})
    assert having("plstm_requests_total", 'status!~"2.."', grouped_by={"status"})
    assert having("plstm_gpu_memory_bytes")
    assert having("plstm_model_eval_metric", grouped_by={"model", "metric"})
    assert having("plstm_train_loss", grouped_by={"split"})
    assert having("plstm_train_accuracy", grouped_by={"split"})


def test_promtool_parses_every_query(dashboard: dict, tmp_path: Path) -> None:
    """Each expression (Grafana variables filled in) as a recording rule: promtool parses it."""
    queries = _queries(dashboard)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q.for_promtool()}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run([tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def _exported(text: str) -> dict[str, set[str]]:
    """sample name -> its label names, from a Prometheus text exposition."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


@pytest.fixture(scope="module")
def server_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """The server's /metrics after one image and one molecule, plus the GPU gauge (exported
    only where CUDA is, so read from a Metrics built for CUDA)."""
    repo = make_repository(tmp_path_factory.mktemp("model_repository"))
    settings = Settings(model_repository=repo, device="cpu", max_delay_ms=1.0)
    with TestClient(create_app(settings)) as client:
        image = {"image": ("x.png", png_bytes(IMG, IMG, seed=1), "image/png")}
        assert client.post("/v1/models/vis/classify", files=image).status_code == 200
        molecule = {"graphs": [{"smiles": "CCO"}]}
        assert client.post("/v1/models/mol/predict", json=molecule).status_code == 200
        exported = _exported(client.get("/metrics").text)
    gpu = Metrics(cuda=True)
    assert gpu.gpu_memory is not None
    gpu.gpu_memory.labels("cuda:0").set(1.0)
    exported.update(_exported(generate_latest(gpu.registry).decode()))
    yield exported


@pytest.fixture(scope="module")
def training_metrics() -> dict[str, set[str]]:
    """The trainer's exporter after one metrics row with every key it knows."""
    metrics = TrainingMetrics(experiment="arrow-plstm", model="plstm_vis_t")
    metrics.update(
        {
            "train_loss": 0.5,
            "val_loss": 0.6,
            "train_accuracy": 0.8,
            "val_accuracy": 0.7,
            "val_rmse": 1.0,
            "lr": 1e-4,
            "samples_per_second": 100.0,
            "epoch": 1,
            "step": 10,
            "best": 0.7,
            "gpu_memory_bytes": 1024,
            "device": "cuda:0",
        }
    )
    metrics.steps_total.inc()
    return _exported(generate_latest(metrics.registry).decode())


def test_every_queried_metric_and_label_is_exported(
    dashboard: dict, server_metrics: dict, training_metrics: dict
) -> None:
    exported = {**server_metrics, **training_metrics}
    assert not set(server_metrics) & set(training_metrics)
    variable_queries = [Query(v["definition"]) for v in dashboard["templating"]["list"]]
    for query in _queries(dashboard) + variable_queries:
        metrics = query.metrics()
        assert metrics, query.expr
        missing = {m for m in metrics if m not in exported}
        source = (
            "training.monitor"
            if any(m.startswith("plstm_train_") for m in missing)
            else ("the server's /metrics")
        )
        assert not missing, f"{query.expr}: {sorted(missing)} not in {source}"
        available = set().union(*(exported[m] for m in metrics)) | TARGET_LABELS
        for metric, labels in query.matchers().items():
            assert labels <= exported[metric] | TARGET_LABELS, (query.expr, metric, labels)
        assert query.grouping() <= available, (query.expr, query.grouping() - available)
        legend_source = query.grouping() if query.grouping() else available
        assert query.legend_labels() <= legend_source, (query.legend, query.expr)
