"""docker-compose.yml and docker-compose.cpu.yml as Docker Compose itself reads them (the
``docker-compose`` binary of the dev extra, ``config``), for every file set and profile."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from app.core.settings import Settings
from tests.deploy import dockerfile
from tests.deploy.tools import DOCKERFILE, ENV_EXAMPLE, ROOT, compose_config, read_env_file, seconds
from training.experiments import EXPERIMENTS

SERVICES = {"api", "proxy", "prometheus", "grafana"}
GPU = [{"capabilities": ["gpu"], "driver": "nvidia", "count": -1}]  # count: all
FIXED_BY_COMPOSE = {"PLSTM_HOST", "PLSTM_PORT", "PLSTM_MODEL_REPOSITORY"}
REPOSITORY = "/opt/plstm/model_repository"


def _gpu_devices(service: dict) -> list | None:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")


def _volume(service: dict, target: str) -> dict:
    (volume,) = [v for v in service.get("volumes", []) if v["target"] == target]
    return volume


@pytest.mark.parametrize("cpu", [False, True], ids=["gpu", "cpu"])
@pytest.mark.parametrize("profiles", [(), ("train",)], ids=["default", "train"])
def test_every_file_set_and_profile_is_valid(
    tmp_path: Path, cpu: bool, profiles: tuple[str, ...]
) -> None:
    config = compose_config(tmp_path, cpu=cpu, profiles=profiles)
    assert set(config["services"]) == SERVICES | set(profiles)
    assert config["name"] == "plstm"
    for name, service in config["services"].items():
        assert service["restart"] == ("no" if name == "train" else "unless-stopped"), name
        if name in ("api", "train"):
            assert (_gpu_devices(service) is None) == cpu, name
            assert service["image"].startswith("plstm-cpu:" if cpu else "plstm:"), name


def test_api_service(tmp_path: Path) -> None:
    config = compose_config(tmp_path)
    api = config["services"]["api"]
    assert _gpu_devices(api) == GPU
    # scalable: no fixed host port, no fixed container name
    assert "ports" not in api and "container_name" not in api
    port = dockerfile.parse(DOCKERFILE).stage("runtime").last("EXPOSE").value
    assert api["expose"] == [port] and api["environment"]["PLSTM_PORT"] == port
    assert api["environment"]["PLSTM_HOST"] == "0.0.0.0"
    volume = _volume(api, REPOSITORY)
    assert (volume["type"], volume["source"], volume["target"]) == ("volume", "models", REPOSITORY)
    assert api["environment"]["PLSTM_MODEL_REPOSITORY"] == REPOSITORY

    # the image's own health check, on the readiness endpoint, with time to load and warm up
    runtime = dockerfile.parse(DOCKERFILE).stage("runtime")
    image_check = runtime.last("HEALTHCHECK").value.split(" CMD ", 1)[1]
    assert api["healthcheck"]["test"] == [
        "CMD",
        *dockerfile.Instruction("CMD", image_check, 0).exec_form(),
    ]
    assert seconds(api["healthcheck"]["start_period"]) >= 120
    # SIGTERM drains for up to the request timeout + 5 s (app/cli.py) before Docker kills
    timeout = Settings.model_fields["request_timeout_s"].default
    assert seconds(api["stop_grace_period"]) >= timeout + 5

    # the environment: .env.example, with the three settings compose fixes
    example = read_env_file(ENV_EXAMPLE)
    for key, value in example.items():
        if key not in FIXED_BY_COMPOSE:
            assert api["environment"][key] == value, key

    proxy = config["services"]["proxy"]
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    assert [(p["target"], p["published"]) for p in proxy["ports"]] == [(8080, "8000")]
    published = {
        name: [p["published"] for p in service.get("ports", [])]
        for name, service in config["services"].items()
    }
    assert published == {"api": [], "proxy": ["8000"], "prometheus": ["9090"], "grafana": ["3000"]}


def test_cpu_override(tmp_path: Path) -> None:
    config = compose_config(tmp_path, cpu=True, profiles=("train",))
    api, train = config["services"]["api"], config["services"]["train"]
    assert api["environment"]["PLSTM_DEVICE"] == "cpu"
    assert train["environment"]["PLSTM_TRAIN_DEVICE"] == "cpu"
    for service in (api, train):
        assert "deploy" not in service or _gpu_devices(service) is None
        args = service["build"]["args"]
        assert "cuda" not in args["BASE_IMAGE"] and args["PLSTM_TORCH"].endswith("+cpu")
        assert args["ONNXRUNTIME_GPU"] == ""  # keeps the CPU onnxruntime
    # everything else as in the GPU file
    gpu = compose_config(tmp_path)
    assert config["services"]["prometheus"] == gpu["services"]["prometheus"]
    assert _volume(api, REPOSITORY) == _volume(gpu["services"]["api"], REPOSITORY)


def test_train_profile(tmp_path: Path) -> None:
    config = compose_config(tmp_path, profiles=("train",))
    api, train = config["services"]["api"], config["services"]["train"]
    assert train["profiles"] == ["train"]
    assert _gpu_devices(train) == GPU
    assert train["image"] == api["image"] and train["build"] == api["build"]
    # writes into the model repository volume the api serves from
    assert _volume(train, REPOSITORY) == _volume(api, REPOSITORY)
    assert train["environment"]["PLSTM_MODEL_REPOSITORY"] == REPOSITORY
    runs = train["environment"]["PLSTM_RUNS_DIR"]
    assert _volume(train, runs)["type"] == "volume"
    # the publishing script of the repository, and a real experiment / model name
    bash, script = train["entrypoint"]
    assert bash == "bash" and (ROOT / script.removeprefix("/opt/plstm/")).is_file()
    experiment, model = train["command"]
    assert experiment in EXPERIMENTS
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", model)
    assert train["expose"] == [train["environment"]["PLSTM_TRAIN_METRICS_PORT"]]


def test_env_example_documents_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    example = read_env_file(ENV_EXAMPLE)
    settings = {f"PLSTM_{name.upper()}" for name in Settings.model_fields}
    server = {k for k in example if k.startswith("PLSTM_")}
    assert server == settings - FIXED_BY_COMPOSE, (
        f"missing from .env.example: {sorted(settings - FIXED_BY_COMPOSE - server)}, "
        f"unknown: {sorted(server - settings)}"
    )
    assert set(example) - server == {"DEPLOY_ENV_FILE"}
    # every value is one the server accepts
    for key in [k for k in os.environ if k.startswith("PLSTM_")]:
        monkeypatch.delenv(key)
    for key in server:
        monkeypatch.setenv(key, example[key])
    settings_read = Settings()
    assert settings_read.api_key is None
    assert settings_read.max_batch_size == int(example["PLSTM_MAX_BATCH_SIZE"])
    # and it is the server's default (the example documents the defaults)
    for key in server:
        monkeypatch.delenv(key)
    assert settings_read.model_dump() == Settings().model_dump()


def test_dot_env_replaces_the_example(tmp_path: Path) -> None:
    """What README tells: cp .env.example .env, edit .env; compose then hands .env to the api
    and reads the stack's variables from it."""
    env = tmp_path / "edited.env"
    text = ENV_EXAMPLE.read_text().replace("DEPLOY_ENV_FILE=.env", f"DEPLOY_ENV_FILE={env}")
    text = text.replace("PLSTM_MAX_BATCH_SIZE=32", "PLSTM_MAX_BATCH_SIZE=7")
    text += "DEPLOY_API_PORT=18000\nDEPLOY_IMAGE_TAG=v2\nTRAIN_EXPERIMENT=solubility-plstm\n"
    env.write_text(text)
    config = compose_config(tmp_path, profiles=("train",), env_lines=text)
    services = config["services"]
    assert services["api"]["environment"]["PLSTM_MAX_BATCH_SIZE"] == "7"
    assert services["api"]["image"] == services["train"]["image"] == "plstm:v2"
    assert services["proxy"]["ports"][0]["published"] == "18000"
    assert services["train"]["command"][0] == "solubility-plstm"


def test_bind_mounts_come_from_the_repository(tmp_path: Path) -> None:
    config = compose_config(tmp_path, profiles=("train",))
    binds = [
        (name, v)
        for name, service in config["services"].items()
        for v in service.get("volumes", [])
        if v["type"] == "bind"
    ]
    assert binds
    for name, volume in binds:
        source = Path(volume["source"])
        assert source.is_relative_to(ROOT / "deploy") and source.exists(), (name, volume)
        assert volume.get("read_only") is True, (name, volume)
    named = {v["source"] for _, s in config["services"].items() for v in s.get("volumes", [])}
    assert set(config["volumes"]) == named - {v["source"] for _, v in binds}
