"""The Dockerfile: hadolint-clean, multi-stage on a CUDA runtime base that matches the torch
build, non-root, health-checked; it installs the project with CI's command and starts it with
the command of scripts/run.sh and the README; .dockerignore keeps the build context clean."""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from packaging.requirements import Requirement

from app.cli import FLAG_SETTINGS, build_parser
from app.core.settings import Settings
from tests.deploy import dockerfile
from tests.deploy.tools import DOCKERFILE, ROOT, compose_config, run, tool

# CUDA version of the default (PyPI) Linux wheels of a torch release, read from the wheel's
# requirements (torch 2.11.0 requires cuda-toolkit 13.0.2): the CUDA base image must match.
TORCH_PYPI_CUDA = {"2.11": "13.0"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def parsed() -> dockerfile.Dockerfile:
    return dockerfile.parse(DOCKERFILE)


def test_hadolint_finds_nothing() -> None:
    result = run([tool("hadolint"), "--no-color", "--format", "json", str(DOCKERFILE)])
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_stages_base_user_port_and_healthcheck(parsed: dockerfile.Dockerfile) -> None:
    assert [s.name for s in parsed.stages] == ["os", "build", "runtime"]
    os_stage, build, runtime = parsed.stages
    assert os_stage.base == "${BASE_IMAGE}"
    assert build.base == runtime.base == "os"
    base = parsed.global_args["BASE_IMAGE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-cudnn-runtime-ubuntu24\.04", base)
    assert match, f"not a CUDA runtime base: {base}"
    torch_pin = Requirement(build_arg(parsed, "PLSTM_TORCH"))
    (spec,) = torch_pin.specifier
    minor = ".".join(spec.version.split(".")[:2])
    assert TORCH_PYPI_CUDA[minor] == match.group(1), (torch_pin, base)

    # an unprivileged user, numeric (so Kubernetes' runAsNonRoot can verify it), made in `os`
    user = runtime.last("USER").value
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, user
    assert f"--uid {uid}" in os_stage.last("RUN").value
    assert runtime.instructions.index(runtime.last("USER")) > max(
        runtime.instructions.index(i) for i in runtime.all("RUN")
    ), "USER must come after the last RUN"

    assert runtime.last("EXPOSE").value == str(Settings.model_fields["port"].default)

    healthcheck = runtime.last("HEALTHCHECK").value
    assert "--start-period=" in healthcheck
    command = dockerfile.Instruction("CMD", healthcheck.split(" CMD ", 1)[1], 0).exec_form()
    assert command == ["/opt/plstm/.venv/bin/python", "/opt/plstm/deploy/healthcheck.py"]
    assert (ROOT / "deploy" / "healthcheck.py").is_file()


def build_arg(parsed: dockerfile.Dockerfile, name: str) -> str:
    args = parsed.args()
    assert name in args, f"the Dockerfile declares no ARG {name}"
    return args[name]


def _shell_commands(run_value: str) -> list[str]:
    """The simple commands of a RUN line (split at && ; || and if/then/fi keywords)."""
    pieces = re.split(r"&&|\|\||;|\bthen\b|\belse\b|\bfi\b|\bif\b", run_value)
    return [" ".join(p.split()) for p in pieces if p.strip()]


def _setup_command() -> str:
    """How CI sets the project up: the line of scripts/test.sh that runs scripts/setup.sh
    (and .ci/run runs scripts/test.sh)."""
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    lines = [
        line.strip()
        for line in (ROOT / "scripts" / "test.sh").read_text().splitlines()
        if "scripts/setup.sh" in line and not line.strip().startswith("#")
    ]
    assert lines == ["bash scripts/setup.sh"], lines
    return lines[0]


def _cpu_build_args(tmp_path: Path) -> dict[str, str]:
    return compose_config(tmp_path, cpu=True)["services"]["api"]["build"]["args"]


def test_install_is_the_ci_command(parsed: dockerfile.Dockerfile, tmp_path: Path) -> None:
    setup = _setup_command()
    build = parsed.stage("build")
    assert build.last("WORKDIR") is None and parsed.stage("os").last("WORKDIR").value == (
        "/opt/plstm"
    )
    runs = build.all("RUN")
    installs = [r for r in runs if "scripts/setup.sh" in r.value]
    assert len(installs) == 2, "setup.sh runs for the dependencies, then for the project"
    for instruction in installs:
        commands = [c for c in _shell_commands(instruction.value) if "setup.sh" in c]
        assert commands == [setup], commands
    # the second run sees the whole project (COPY . .) before it
    copy_all = next(i for i in build.all("COPY") if i.value == ". .")
    assert build.instructions.index(copy_all) < build.instructions.index(installs[1])

    # nothing else installs the project or its dependencies; the only other pip install puts
    # the pinned GPU build of ONNX Runtime in place of the project's onnxruntime
    pip_installs = [
        c for r in runs for c in _shell_commands(r.value) if re.search(r"pip install", c)
    ]
    assert pip_installs == [
        '.venv/bin/python -m pip install -q --no-cache-dir "${ONNXRUNTIME_GPU}"'
    ]
    ort_gpu = Requirement(build_arg(parsed, "ONNXRUNTIME_GPU"))
    assert ort_gpu.name == "onnxruntime-gpu"
    (ort_pin,) = ort_gpu.specifier
    assert ort_pin.operator == "=="
    for requirement in map(Requirement, PYPROJECT["project"]["dependencies"]):
        if requirement.name == "onnxruntime":
            assert requirement.specifier.contains(ort_pin.version), (requirement, ort_gpu)
    assert _cpu_build_args(tmp_path)["ONNXRUNTIME_GPU"] == ""

    # setup.sh takes the torch build from PLSTM_TORCH; the image's and the CPU variant's pins
    # satisfy the project's own torch requirement
    assert "PLSTM_TORCH" in (ROOT / "scripts" / "setup.sh").read_text()
    torch_requirement = next(
        Requirement(r) for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch")
    )
    for pin in (build_arg(parsed, "PLSTM_TORCH"), _cpu_build_args(tmp_path)["PLSTM_TORCH"]):
        (spec,) = Requirement(pin).specifier
        assert spec.operator == "==", pin
        assert torch_requirement.specifier.contains(spec.version, prereleases=False), pin

    # the runtime stage takes the .venv setup.sh made in the WORKDIR of the build
    assert "-m venv .venv" in (ROOT / "scripts" / "setup.sh").read_text()
    copies = [i.value for i in parsed.stage("runtime").all("COPY")]
    assert "--from=build /opt/plstm/.venv/ /opt/plstm/.venv/" in copies
    assert ". /opt/plstm/" in copies


def test_build_args_of_the_compose_files_exist(
    parsed: dockerfile.Dockerfile, tmp_path: Path
) -> None:
    declared = set(parsed.args())
    for cpu in (False, True):
        config = compose_config(tmp_path, cpu=cpu, profiles=("train",))
        for name, service in config["services"].items():
            unknown = set(service.get("build", {}).get("args", {})) - declared
            assert not unknown, f"{name} (cpu={cpu}): build args the Dockerfile lacks: {unknown}"


def _settings_of(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """The server settings a ``plstm serve ...`` command line gives in environment ``env``."""
    assert Path(argv[0]).name == "plstm", argv
    assert argv[1] == "serve", f"{argv}: not the model server"
    args = build_parser().parse_args(argv[1:])
    flags = {k: getattr(args, k) for k in FLAG_SETTINGS if getattr(args, k) is not None}
    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith("PLSTM_")]:
            m.delenv(key)
        for key, value in env.items():
            m.setenv(key, value)
        return Settings(**flags).model_dump()


def _run_sh_command() -> list[str]:
    lines = [
        line.strip()
        for line in (ROOT / "scripts" / "run.sh").read_text().splitlines()
        if line.strip().startswith("exec ")
    ]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0])[1:]
    return [w for w in words if w != "$@"]


def _readme_commands() -> list[list[str]]:
    """Every ``plstm serve`` command line in the README's code blocks (comments dropped)."""
    commands = []
    in_block = False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block or "plstm serve" not in line:
            continue
        words = shlex.split(line, comments=True)
        if len(words) >= 2 and Path(words[0]).name == "plstm" and words[1] == "serve":
            commands.append(words)
    return commands


def test_start_command_is_run_sh_and_readme(
    parsed: dockerfile.Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = parsed.stage("runtime")
    image_argv = runtime.last("ENTRYPOINT").exec_form() + runtime.last("CMD").exec_form()
    image_env = {}
    for instruction in runtime.all("ENV"):
        for word in shlex.split(instruction.value):
            key, _, value = word.partition("=")
            if key.startswith("PLSTM_"):
                image_env[key] = value
    image = _settings_of(image_argv, image_env, monkeypatch)
    run_sh = _run_sh_command()
    assert Path(run_sh[0]).name == "plstm" and run_sh[1:2] == ["serve"], (
        f"scripts/run.sh starts {run_sh}, the image starts {image_argv}: both must run the "
        "model server (`plstm serve`)"
    )
    assert _settings_of(run_sh, {}, monkeypatch) == image
    readme = _readme_commands()
    assert readme, "the README shows no `plstm serve` command"
    for argv in readme:
        assert _settings_of(argv, {}, monkeypatch) == image, argv
    # both run in the project root: run.sh cd's there, the image's WORKDIR holds the project
    assert 'cd "$root"' in (ROOT / "scripts" / "run.sh").read_text()
    assert parsed.stage("os").last("WORKDIR").value == "/opt/plstm"
    path_env = " ".join(i.value for i in runtime.all("ENV"))
    assert "PATH=/opt/plstm/.venv/bin:" in path_env


def _dockerignore() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_build_context_holds_the_project() -> None:
    included = set(exclude_paths(str(ROOT), _dockerignore(), dockerfile="Dockerfile"))
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted({p.rstrip("*") for p in find})
    needed = [
        "pyproject.toml",
        "README.md",
        ".env.example",
        "scripts/setup.sh",
        "deploy/healthcheck.py",
        "deploy/train/train-and-publish.sh",
        *(f"{p}/__init__.py" for p in packages),
    ]
    for path in needed:
        assert path in included, f"{path} is kept out of the build context"
    shipped = ROOT / "model_repository"
    if shipped.is_dir():  # the Dockerfile's build fails without it
        for path in shipped.rglob("*"):
            assert str(path.relative_to(ROOT)) in included, path
    # the documentation pages' assets (app/api/docs.py): the image serves them, no CDN
    for path in (ROOT / "app" / "static").rglob("*"):
        assert str(path.relative_to(ROOT)) in included, path
    assert not any("__pycache__" in p or p.startswith(".venv/") for p in included)


def test_dockerignore_keeps_caches_venvs_and_data_out(tmp_path: Path) -> None:
    """The patterns, applied by the Docker SDK's own matcher to a tree with the usual junk."""
    junk = [
        ".git/HEAD",
        ".venv/bin/python",
        "venv/bin/python",
        "tests/.venv/bin/python",
        ".whl/torch.whl",
        ".ort1/ortpart.0",
        "app/__pycache__/main.cpython-311.pyc",
        "tests/app/__pycache__/x.pyc",
        "models/stray.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/x",
        ".mypy_cache/x",
        "plstm.egg-info/PKG-INFO",
        "build/lib/x.py",
        "dist/plstm.whl",
        "runs/arrow-plstm-seed0/best/model.safetensors",
        "out/result.json",
        "data/MUTAG/MUTAG_A.txt",
        "datasets/x.sdf",
        "train.log",
        ".env",
    ]
    kept = [
        ".env.example",
        "app/__init__.py",
        "model_repository/arrow-pointing/1/model.safetensors",
        "deploy/prometheus/prometheus.yml",
        "tests/deploy/test_dockerfile.py",
    ]
    for name in junk + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    included = set(exclude_paths(str(tmp_path), _dockerignore(), dockerfile="Dockerfile"))
    assert sorted(p for p in junk if p in included) == []
    assert sorted(p for p in kept if p not in included) == []
