"""deploy/k8s/kserve: the InferenceService asks for the plstm ServingRuntime through a model
format and the protocol the runtime speaks (Open Inference Protocol v2, KServe's "v2"), serves
the model repository on the claim that deploy/k8s/models-pvc makes, on a GPU, like the plain
Deployment. (Schema validation, ports, probes, settings and security: test_k8s*.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.k8s import container, find, render

KSERVE_CONTAINER = "kserve-container"  # the container KServe merges the model's spec into


@pytest.fixture(scope="module")
def kserve() -> tuple[dict[str, Any], dict[str, Any]]:
    resources = render("kserve")
    return find(resources, "ServingRuntime"), find(resources, "InferenceService")


def test_inference_service_selects_the_runtime(kserve: tuple) -> None:
    runtime, service = kserve
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["protocolVersion"] == "v2"
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    # one server for the whole repository: not KServe's multi-model (ModelMesh) serving
    assert runtime["spec"]["multiModel"] is False
    assert [c["name"] for c in runtime["spec"]["containers"]] == [KSERVE_CONTAINER]


def test_models_come_from_the_claim(kserve: tuple) -> None:
    _, service = kserve
    claim = find(render("models-pvc/claim"), "PersistentVolumeClaim")["metadata"]["name"]
    assert service["spec"]["predictor"]["model"]["storageUri"] == f"pvc://{claim}"


def test_runs_on_a_gpu_like_the_deployment(kserve: tuple) -> None:
    runtime, service = kserve
    predictor = service["spec"]["predictor"]
    deployment = find(render("base"), "Deployment", "plstm")["spec"]["template"]["spec"]
    server = container(deployment["containers"], "server")
    assert predictor["model"]["resources"] == server["resources"]
    assert predictor["tolerations"] == deployment["tolerations"]
    assert predictor["terminationGracePeriodSeconds"] == deployment["terminationGracePeriodSeconds"]
    assert {"name": "PLSTM_DEVICE", "value": "cuda"} in predictor["model"]["env"]
    runtime_container = container(runtime["spec"]["containers"], KSERVE_CONTAINER)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe", "lifecycle"):
        kserve_probe = runtime_container[probe]
        if "httpGet" in kserve_probe:  # KServe's container names no port: the number
            kserve_probe = {**kserve_probe, "httpGet": {**kserve_probe["httpGet"], "port": "http"}}
        assert kserve_probe == server[probe], probe
