"""The server pods of deploy/k8s (the Deployment of every variant and KServe's runtime) match
the image and the app: the port the image exposes and the server binds, probes on routes the
app serves, only real settings with values the server accepts, the image's user with a
read-only root and writable /tmp and HOME, a grace period that covers the drain, GPUs where
they are meant, and the model repository from the image, a PVC or an object store URI."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.deploy.k8s import (
    K8S,
    container,
    dockerfile_runtime,
    find,
    image_env,
    render,
)
from tests.deploy.tools import ROOT, seconds

SERVER = "server"
REPOSITORY = "/opt/plstm/model_repository"  # where the image holds its models
KSERVE_REPOSITORY = "/mnt/models"  # where KServe puts the storageUri's content
LIVE, READY = "/v2/health/live", "/v2/health/ready"


@dataclass(frozen=True)
class Variant:
    directory: str
    gpu: bool
    models: str  # where the model repository comes from: image, pvc or uri


VARIANTS = [
    Variant("base", gpu=True, models="image"),
    Variant("overlays/cpu", gpu=False, models="image"),
    Variant("overlays/pvc", gpu=True, models="pvc"),
    Variant("overlays/uri", gpu=True, models="uri"),
]
IDS = [v.directory for v in VARIANTS]
PODS = [*IDS, "kserve"]  # every variant's Deployment, and KServe's predictor


@dataclass
class Pod:
    """A server pod as a variant renders it."""

    resources: list[dict[str, Any]]
    spec: dict[str, Any]
    container: dict[str, Any]


def _deployment_pod(variant: Variant) -> Pod:
    resources = render(variant.directory)
    spec = find(resources, "Deployment", "plstm")["spec"]["template"]["spec"]
    return Pod(resources, spec, container(spec["containers"], SERVER))


def _kserve_pod() -> Pod:
    """KServe's pod as it combines them: the runtime's container with the environment the
    InferenceService's model adds, in the predictor's pod spec with the runtime's volumes."""
    resources = render("kserve")
    runtime = find(resources, "ServingRuntime")["spec"]
    predictor = find(resources, "InferenceService")["spec"]["predictor"]
    spec = {**predictor, "volumes": runtime.get("volumes", [])}
    server = container(runtime["containers"], "kserve-container")
    server["env"] = server.get("env", []) + predictor["model"].get("env", [])
    return Pod(resources, spec, server)


def _pod(name: str) -> Pod:
    """The server pod of :data:`PODS` entry ``name``."""
    if name == "kserve":
        return _kserve_pod()
    (variant,) = [v for v in VARIANTS if v.directory == name]
    return _deployment_pod(variant)


@pytest.fixture(scope="module")
def served_get_routes(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The paths of the app's GET operations in its OpenAPI document (the app is built, not
    started)."""
    app = create_app(Settings(model_repository=tmp_path_factory.mktemp("repo"), device="cpu"))
    return {path for path, operations in app.openapi()["paths"].items() if "get" in operations}


def _port(pod: Pod, port: int | str) -> int:
    """A probe's or Service's port (a number or the name of a container port) as a number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in pod.container["ports"] if p.get("name") == port]
    return number


def _environment(pod: Pod) -> dict[str, str | None]:
    """The server's environment: its env values and the ConfigMaps it reads whole (a value
    from a Secret is None)."""
    env: dict[str, str | None] = {}
    for source in pod.container.get("envFrom", []):
        if "configMapRef" in source:
            config = find(pod.resources, "ConfigMap", source["configMapRef"]["name"])
            env.update(config["data"])
    for variable in pod.container.get("env", []):
        env[variable["name"]] = variable.get("value")
    return env


def _settings(env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("PLSTM_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if value is not None:
            monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize("name", PODS)
def test_port_is_the_images_and_the_servers(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pod = _pod(name)
    exposed = int(dockerfile_runtime().last("EXPOSE").value)
    (port,) = pod.container["ports"]
    assert port["containerPort"] == exposed
    settings = _settings(_environment(pod), monkeypatch)
    assert (settings.host, settings.port) == ("0.0.0.0", exposed)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_service_and_scrape_annotations_reach_the_port(variant: Variant) -> None:
    pod = _deployment_pod(variant)
    deployment = find(pod.resources, "Deployment", "plstm")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    service = find(pod.resources, "Service", "plstm")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert _port(pod, port["targetPort"]) == pod.container["ports"][0]["containerPort"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == pod.container["ports"][0]["containerPort"]


@pytest.mark.parametrize("name", PODS)
def test_probes_call_routes_the_app_serves(name: str, served_get_routes: set[str]) -> None:
    pod = _pod(name)
    assert {LIVE, READY} <= served_get_routes
    paths = {
        kind: pod.container[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    # uvicorn answers nothing before every model is loaded and warmed up, so liveness
    # (and the startup probe) ask whether it answers; readiness whether it serves
    assert paths == {"startupProbe": LIVE, "livenessProbe": LIVE, "readinessProbe": READY}
    for kind in paths:
        port = _port(pod, pod.container[kind]["httpGet"]["port"])
        assert port == pod.container["ports"][0]["containerPort"], kind


@pytest.mark.parametrize("name", PODS)
def test_startup_probe_waits_as_long_as_the_image_health_check(name: str) -> None:
    probe = _pod(name).container["startupProbe"]
    healthcheck = dockerfile_runtime().last("HEALTHCHECK").value
    start_period = seconds(re.search(r"--start-period=(\S+)", healthcheck).group(1))
    assert probe["periodSeconds"] * probe["failureThreshold"] >= start_period


@pytest.mark.parametrize("name", PODS)
def test_environment_holds_real_settings_the_server_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = _pod(name)
    env = _environment(pod)
    settings = {f"PLSTM_{field.upper()}" for field in Settings.model_fields}
    assert set(env) - settings == set(), "not a server setting"
    read = _settings(env, monkeypatch)  # raises on a value the server refuses
    repository = KSERVE_REPOSITORY if name == "kserve" else REPOSITORY
    assert read.model_repository == Path(repository)
    # the API key comes from an optional Secret, never from the manifests
    (api_key,) = [v for v in pod.container["env"] if v["name"] == "PLSTM_API_KEY"]
    assert api_key["valueFrom"]["secretKeyRef"]["optional"] is True


@pytest.mark.parametrize("name", PODS)
def test_runs_as_the_images_user_on_a_read_only_root(name: str) -> None:
    pod = _pod(name)
    uid, gid = (int(part) for part in dockerfile_runtime().last("USER").value.split(":"))
    context = pod.spec["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
    assert context["runAsNonRoot"] is True
    own = pod.container["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    # where the server writes (measured: README.md, "Kubernetes") is an emptyDir
    empty_dirs = {v["name"] for v in pod.spec["volumes"] if "emptyDir" in v}
    writable = {
        m["mountPath"]
        for m in pod.container["volumeMounts"]
        if m["name"] in empty_dirs and not m.get("readOnly")
    }
    assert {"/tmp", image_env("HOME")} <= writable


@pytest.mark.parametrize("name", PODS)
def test_grace_period_covers_the_drain(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pod = _pod(name)
    sleep, pause = pod.container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    timeout = _settings(_environment(pod), monkeypatch).request_timeout_s
    # uvicorn drains for up to the request timeout + 5 s after SIGTERM (app/cli.py)
    assert pod.spec["terminationGracePeriodSeconds"] >= int(pause) + timeout + 5


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_gpu_or_cpu(variant: Variant, monkeypatch: pytest.MonkeyPatch) -> None:
    pod = _deployment_pod(variant)
    resources = pod.container["resources"]
    device = _settings(_environment(pod), monkeypatch).device
    tolerated = {t["key"] for t in pod.spec.get("tolerations", [])}
    image = pod.container["image"].rsplit(":", 1)[0]
    if variant.gpu:
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert (device, image, "nvidia.com/gpu" in tolerated) == ("cuda", "plstm", True)
    else:
        assert "nvidia.com/gpu" not in str(pod.resources)
        # the image docker-compose.cpu.yml builds
        assert (device, image) == ("cpu", "plstm-cpu")
    assert "memory" in resources["requests"] and "memory" in resources["limits"]


def _mount(pod: Pod, path: str) -> dict[str, Any] | None:
    found = [m for m in pod.container.get("volumeMounts", []) if m["mountPath"] == path]
    return found[0] if found else None


def _volume(pod: Pod, name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod.spec["volumes"] if v["name"] == name]
    return volume


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_model_repository_source(variant: Variant) -> None:
    pod = _deployment_pod(variant)
    mount = _mount(pod, REPOSITORY)
    if variant.models == "image":
        assert mount is None and (ROOT / "model_repository").is_dir()
        return
    assert mount["readOnly"] is True
    volume = _volume(pod, mount["name"])
    if variant.models == "pvc":
        claim = volume["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        assert find(pod.resources, "PersistentVolumeClaim", claim["claimName"])
        assert find(render("models-pvc/fill"), "PersistentVolumeClaim", claim["claimName"])
        return
    assert "emptyDir" in volume
    (download,) = pod.spec["initContainers"]
    (source, destination) = download["args"]
    assert source == "$(MODELS_URI)"
    (target,) = [m for m in download["volumeMounts"] if m["name"] == mount["name"]]
    assert target["mountPath"] == destination and not target.get("readOnly")
    (uri,) = [e for e in download["env"] if e["name"] == "MODELS_URI"]
    reference = uri["valueFrom"]["configMapKeyRef"]
    config = find(pod.resources, "ConfigMap", reference["name"])
    assert re.fullmatch(r"(s3|gs|https?)://.+", config["data"][reference["key"]])


def test_fill_job_copies_the_images_models_into_the_claim() -> None:
    resources = render("models-pvc/fill")
    spec = find(resources, "Job", "plstm-models-fill")["spec"]["template"]["spec"]
    (copy,) = spec["containers"]
    assert copy["image"] == _deployment_pod(VARIANTS[0]).container["image"]
    (volume,) = spec["volumes"]
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == find(resources, "PersistentVolumeClaim")["metadata"]["name"]
    )
    (mount,) = copy["volumeMounts"]
    assert copy["command"][:2] == ["cp", "-Rnv"]
    assert copy["command"][2:] == [f"{REPOSITORY}/.", f"{mount['mountPath']}/"]


def test_readme_names_existing_paths() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"deploy/k8s/[A-Za-z0-9_./-]*[A-Za-z0-9_]", readme))
    assert {"deploy/k8s/overlays/cpu", "deploy/k8s/kserve"} <= named
    for path in named:
        assert (ROOT / path).exists(), path
    assert K8S.is_dir()
