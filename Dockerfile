# syntax=docker/dockerfile:1
# The plstm model server (`plstm serve` on the shipped model repository), GPU build by default.
#
#   docker build -t plstm .
#   docker run --gpus all -p 8000:8000 plstm
#
# CPU build (no CUDA libraries; the build arguments docker-compose.cpu.yml passes):
#
#   docker build -t plstm-cpu --build-arg BASE_IMAGE=ubuntu:24.04 \
#       --build-arg PLSTM_TORCH=torch==2.11.0+cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#       --build-arg ONNXRUNTIME_GPU= .
#
# The project is installed by scripts/setup.sh, the script CI runs (scripts/test.sh), with
# PLSTM_TORCH naming the torch build; the server starts with the command of scripts/run.sh.
# tests/deploy/test_dockerfile.py keeps these identical.

# torch 2.11.0's Linux wheels on PyPI are built for CUDA 13.0 (they pull cuda-toolkit 13.0.2 and
# cuDNN 9 as pip packages); this base brings the same CUDA 13.0 runtime and cuDNN 9 as system
# libraries for onnxruntime-gpu. Hosts need an NVIDIA driver >= 580 and the Container Toolkit.
ARG BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# os: Python 3.12 (Ubuntu 24.04), a C compiler and the Python headers (Triton compiles its
# kernel launchers at run time), and the unprivileged user the server runs as.
FROM ${BASE_IMAGE} AS os
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu's package versions move with its security updates, so they are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates gcc libc6-dev python3 python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/plstm \
        --shell /usr/sbin/nologin plstm
WORKDIR /opt/plstm

# ---------------------------------------------------------------------------------------------
# build: .venv/ made by scripts/setup.sh, exactly as CI makes it.
FROM os AS build
# the torch requirement scripts/setup.sh installs first (its PLSTM_TORCH variable)
ARG PLSTM_TORCH=torch==2.11.0
# an extra package index for that torch build (the CPU wheels live outside PyPI)
ARG TORCH_INDEX_URL=
# replaces the project's (CPU) onnxruntime: the CUDA 13 build of ONNX Runtime on PyPI; empty in
# the CPU build, which keeps the onnxruntime that setup.sh installed
ARG ONNXRUNTIME_GPU=onnxruntime-gpu==1.31.1
# 1. the dependencies, in a layer that only pyproject.toml and setup.sh invalidate (an empty
# README.md stands in for the real one, which pyproject.toml names)
COPY pyproject.toml ./
COPY scripts/setup.sh scripts/
RUN touch README.md \
    && if [ -n "${TORCH_INDEX_URL}" ]; then export PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}"; fi \
    && bash scripts/setup.sh
# 2. the project itself (the same command again: its dependencies are in place by now)
COPY . .
RUN bash scripts/setup.sh \
    && if [ -n "${ONNXRUNTIME_GPU}" ]; then \
        .venv/bin/python -m pip uninstall -q -y onnxruntime \
        && .venv/bin/python -m pip install -q --no-cache-dir "${ONNXRUNTIME_GPU}"; \
    fi

# ---------------------------------------------------------------------------------------------
# runtime: the environment from the build stage, the source tree and the shipped models.
FROM os AS runtime
COPY --from=build /opt/plstm/.venv/ /opt/plstm/.venv/
COPY . /opt/plstm/
# model_repository/ (part of the context) is baked in; mount a volume on it to add versions.
# Its directories belong to the server's user, so new versions (the compose `train` service)
# and ONNX exports can be written next to the shipped checkpoints, which stay read-only.
RUN if [ ! -d model_repository ]; then \
        echo "model_repository/ is missing from the build context" >&2; exit 1; \
    fi \
    && find model_repository -type d -exec chown plstm:plstm {} + \
    && install -d -o plstm -g plstm runs
ENV PATH=/opt/plstm/.venv/bin:${PATH} \
    HOME=/home/plstm
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["/opt/plstm/.venv/bin/python", "/opt/plstm/deploy/healthcheck.py"]
ENTRYPOINT ["plstm"]
CMD ["serve"]
