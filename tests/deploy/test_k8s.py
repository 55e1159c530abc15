"""deploy/k8s offline: every kustomization renders and every resource it makes validates
against the Kubernetes schemas (KServe's against kserve.schema.json), for the oldest and the
newest Kubernetes release checked; no manifest file is left out of a kustomization."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.k8s import (
    K8S,
    KSERVE_SCHEMA,
    KUBERNETES_VERSIONS,
    container,
    find,
    kustomizations,
    render,
    validate,
)

KUSTOMIZATIONS = kustomizations()
NOT_KUBERNETES = {K8S / "prometheus-adapter" / "values.yaml"}  # Helm values, tested apart


def test_every_kustomization_is_found() -> None:
    assert KUSTOMIZATIONS == [
        "base",
        "kserve",
        "models-pvc/claim",
        "models-pvc/fill",
        "overlays/cpu",
        "overlays/pvc",
        "overlays/uri",
    ]


def _referenced_files() -> set[Path]:
    """The files the kustomizations and components under deploy/k8s name."""
    out = set()
    for path in K8S.rglob("kustomization.yaml"):
        config = yaml.safe_load(path.read_text())
        names = list(config.get("resources", []))
        names += [p["path"] for p in config.get("patches", []) if "path" in p]
        for generator in config.get("configMapGenerator", []):
            names += generator.get("envs", []) + generator.get("files", [])
        out |= {(path.parent / n).resolve() for n in names if (path.parent / n).is_file()}
    return out


def test_every_manifest_is_in_a_kustomization() -> None:
    files = {
        p.resolve()
        for p in K8S.rglob("*")
        if p.is_file() and p.name != "kustomization.yaml" and p not in NOT_KUBERNETES
    }
    assert files, "no manifests under deploy/k8s"
    assert files - _referenced_files() == set()


def test_every_yaml_file_parses() -> None:
    paths = sorted(K8S.rglob("*.yaml"))
    for path in paths:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, path


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_resource_validates(directory: str, version: str) -> None:
    resources = render(directory)
    assert resources
    for resource in resources:
        try:
            validate(resource, version)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(
                f"{directory}: {resource['kind']}/{resource['metadata']['name']} is not valid "
                f"for Kubernetes {version} at {where or '.'}: {exc.message}"
            )


def test_kserve_schema_is_a_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(yaml.safe_load(KSERVE_SCHEMA.read_text()))


def _server_container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(resources, "Deployment", "plstm")["spec"]["template"]["spec"]
    return container(pod["containers"], "server")


def _runtime_container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return container(find(resources, "ServingRuntime")["spec"]["containers"], "kserve-container")


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(resource: dict[str, Any]) -> None:
        target = resource
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


MISTAKES = {
    "misspelled container field": (
        "base",
        "Deployment",
        lambda r: _server_container([r]).update(readinesProbe={}),
    ),
    "number as a word": ("base", "HorizontalPodAutoscaler", _set(["spec", "minReplicas"], "two")),
    "misspelled KServe field": (
        "kserve",
        "InferenceService",
        lambda r: r["spec"]["predictor"]["model"].update(storageURI="pvc://plstm-models"),
    ),
    "unknown protocol": (
        "kserve",
        "ServingRuntime",
        _set(["spec", "protocolVersions"], ["v3"]),
    ),
    "misspelled field of a core type inside KServe's": (
        "kserve",
        "ServingRuntime",
        lambda r: _runtime_container([r]).update(readinesProbe={}),
    ),
    "storage URI without a scheme": (
        "kserve",
        "InferenceService",
        _set(["spec", "predictor", "model", "storageUri"], "/mnt/models"),
    ),
    "kind without a schema": ("base", "Service", _set(["kind"], "PodMonitor")),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_validation_rejects(mistake: str) -> None:
    directory, kind, change = MISTAKES[mistake]
    resource = copy.deepcopy(find(render(directory), kind))
    validate(resource, KUBERNETES_VERSIONS[0])  # valid as shipped
    change(resource)
    with pytest.raises(jsonschema.ValidationError):
        validate(resource, KUBERNETES_VERSIONS[0])
