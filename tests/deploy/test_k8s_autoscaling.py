"""Autoscaling and disruptions on Kubernetes: every HorizontalPodAutoscaler scales the server
on plstm_inflight_requests, which the Prometheus Adapter rule serves as a pods metric from the
series the server really exports (read from a running app's /metrics), in PromQL that promtool
parses; every PodDisruptionBudget covers the scaled pods and keeps some serving."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.core.settings import Settings
from app.main import create_app
from tests.app.model_repo import IMG, make_repository, png_bytes
from tests.deploy.k8s import K8S, find, render
from tests.deploy.promql import Query
from tests.deploy.tools import run, tool

ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
SCALED = ["base", "overlays/cpu", "overlays/pvc", "overlays/uri", "kserve"]
KSERVE_POD_LABEL = "serving.kserve.io/inferenceservice"  # KServe labels the predictor's pods


@pytest.fixture(scope="module")
def rule() -> dict[str, Any]:
    (only,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return only


def _scaled_pods(directory: str) -> tuple[str, dict[str, str], int]:
    """(the Deployment's name, its pods' labels, the queue limit of its pods) for the
    server of ``directory``."""
    resources = render(directory)
    if directory == "kserve":
        service = find(resources, "InferenceService")
        name = service["metadata"]["name"]
        queue = Settings.model_fields["max_queue_size"].default
        return f"{name}-predictor", {KSERVE_POD_LABEL: name}, queue
    deployment = find(resources, "Deployment", "plstm")
    settings = find(resources, "ConfigMap", "plstm-settings")["data"]
    queue = int(
        settings.get("PLSTM_MAX_QUEUE_SIZE", Settings.model_fields["max_queue_size"].default)
    )
    return (
        deployment["metadata"]["name"],
        deployment["spec"]["template"]["metadata"]["labels"],
        queue,
    )


@pytest.mark.parametrize("directory", SCALED)
def test_hpa_scales_the_server_on_the_adapter_metric(directory: str, rule: dict) -> None:
    hpa = find(render(directory), "HorizontalPodAutoscaler")["spec"]
    deployment, _, queue = _scaled_pods(directory)
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment,
    }
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue"
    # scale out well before a pod's queue is full and it sheds requests with 503
    assert 1 <= int(target["averageValue"]) <= queue // 2
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]


@pytest.mark.parametrize("directory", SCALED)
def test_disruption_budget_covers_the_scaled_pods(directory: str) -> None:
    resources = render(directory)
    budget = find(resources, "PodDisruptionBudget")["spec"]
    _, labels, _ = _scaled_pods(directory)
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    # a drain always leaves pods serving
    assert (
        budget["maxUnavailable"] < find(resources, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    )
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_kserve_leaves_scaling_to_the_hpa() -> None:
    resources = render("kserve")
    service = find(resources, "InferenceService")
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/autoscalerClass"] == "external"
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor, hpa = (
        service["spec"]["predictor"],
        find(resources, "HorizontalPodAutoscaler")["spec"],
    )
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )
    assert hpa == find(render("base"), "HorizontalPodAutoscaler")["spec"] | {
        "scaleTargetRef": hpa["scaleTargetRef"]
    }


def test_adapter_rule_serves_a_pods_metric(rule: dict) -> None:
    (series,) = Query(rule["seriesQuery"]).metrics()
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["name"]["as"] == series
    overrides = rule["resources"]["overrides"]
    assert {label: o["resource"] for label, o in overrides.items()} == {
        "namespace": "namespace",
        "pod": "pod",
    }
    assert Query(rule["seriesQuery"]).matchers()[series] == {"namespace", "pod"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """sample name -> label names in the server's /metrics after one image request."""
    repository = make_repository(tmp_path_factory.mktemp("model_repository"))
    settings = Settings(model_repository=repository, device="cpu", warmup=False)
    with TestClient(create_app(settings)) as client:
        image = {"image": ("x.png", png_bytes(IMG, IMG, seed=1), "image/png")}
        assert client.post("/v1/models/vis/classify", files=image).status_code == 200
        text = client.get("/metrics").text
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_adapter_series_is_exported_by_the_server(rule: dict, exported: dict) -> None:
    # the query template names no metric of its own (<<.Series>> is the series found)
    assert Query(rule["metricsQuery"]).metrics() == set()
    (metric,) = Query(rule["seriesQuery"]).metrics()
    assert metric in exported, f"{metric} is not in the server's /metrics"
    # one series per model, which the rule sums per pod
    assert exported[metric] == {"model"}


def _filled(query: str) -> str:
    """The adapter's query template with the values it puts in for one HPA."""
    values = {
        "Series": "plstm_inflight_requests",
        "LabelMatchers": 'namespace="default",pod=~"plstm-abc|plstm-def"',
        "GroupBy": "pod",
    }
    filled = re.sub(r"<<\.(\w+)>>", lambda m: values[m.group(1)], query)
    assert "<<" not in filled
    return filled


def test_adapter_query_parses(rule: dict, tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "adapter",
                "rules": [{"record": "adapter:pods", "expr": _filled(rule["metricsQuery"])}],
            }
        ]
    }
    path = tmp_path / "adapter-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run([tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rules found" in result.stdout
