"""The Kubernetes manifests of deploy/k8s as kustomize renders them (``kubectl kustomize``),
and their validation offline: the core kinds against the JSON schemas that kubernetes-validate
ships (strict: unknown fields are errors), KServe's custom resources against
``kserve.schema.json`` beside this file.

KServe's CRD schemas are not on PyPI (the ``kserve`` package holds the Python SDK, with about
thirty dependencies, but no schema), so ``kserve.schema.json`` describes the fields that
deploy/k8s/kserve uses, written from KServe's API reference, and refers to the core schemas for
the Kubernetes types inside them (containers, volumes, probes, resources).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
import yaml

from tests.deploy import dockerfile
from tests.deploy.tools import DEPLOY, DOCKERFILE, run, tool

K8S = DEPLOY / "k8s"
KSERVE_SCHEMA = Path(__file__).with_name("kserve.schema.json")
KSERVE_KINDS = frozenset({"ServingRuntime", "InferenceService"})
MIN_KUBERNETES = "1.30.0"
"""The oldest Kubernetes release the manifests are checked against (and the README names)."""
KUBERNETES_VERSIONS = (MIN_KUBERNETES, kubernetes_validate.latest_version())
CORE_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


def kustomizations() -> list[str]:
    """Every directory under deploy/k8s that ``kubectl kustomize`` builds (components are
    built through the overlays that use them), relative to deploy/k8s."""
    out = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text())["kind"] == "Kustomization":
            out.append(path.parent.relative_to(K8S).as_posix())
    return out


@cache
def _rendered_text(directory: str) -> str:
    result = run([tool("kubectl"), "kustomize", str(K8S / directory)], timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return result.stdout


def render(directory: str) -> list[dict[str, Any]]:
    """The resources ``kubectl kustomize deploy/k8s/<directory>`` outputs (fresh copies)."""
    return [r for r in yaml.safe_load_all(_rendered_text(directory)) if r]


def find(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one resource of ``kind`` (named ``name``, or the prefix kustomize hashes)."""
    found = [
        r
        for r in resources
        if r["kind"] == kind
        and (
            name is None
            or re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", r["metadata"]["name"])
        )
    ]
    assert len(found) == 1, f"{len(found)} {kind} resources named {name!r}"
    return found[0]


def container(containers: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [c for c in containers if c["name"] == name]
    return found


@cache
def _core_schemas(version: str) -> Path:
    """The folder of kubernetes-validate's strict schemas for ``version``."""
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    assert folder.is_dir(), f"kubernetes-validate has no schemas for {version}"
    return Path(str(folder))


@cache
def _kserve_validator(version: str) -> jsonschema.Draft202012Validator:
    definitions = json.loads((_core_schemas(version) / "_definitions.json").read_text())
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    return jsonschema.Draft202012Validator(json.loads(KSERVE_SCHEMA.read_text()), registry=registry)


def validate(resource: dict[str, Any], version: str) -> None:
    """Raise :class:`jsonschema.ValidationError` unless ``resource`` is valid for Kubernetes
    ``version``: core kinds through kubernetes-validate (strict), KServe's through
    ``kserve.schema.json``; any other kind fails (there is nothing to check it against)."""
    if resource.get("kind") in KSERVE_KINDS:
        _kserve_validator(version).validate(resource)
        return
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise jsonschema.ValidationError(exc.message) from exc


def dockerfile_runtime() -> dockerfile.Stage:
    return dockerfile.parse(DOCKERFILE).stage("runtime")


def image_env(name: str) -> str:
    """The value the runtime stage's ENV gives ``name``."""
    for instruction in dockerfile_runtime().all("ENV"):
        for word in re.split(r"\s+", instruction.value):
            key, _, value = word.partition("=")
            if key == name:
                return value
    raise KeyError(name)
