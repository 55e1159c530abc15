"""Server settings from environment variables (prefix ``PLSTM_``), e.g. ``PLSTM_PORT=8080``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Settings(BaseSettings):
    """Every field is read from ``PLSTM_<FIELD NAME>`` (case-insensitive); the descriptions
    are the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="PLSTM_", case_sensitive=False, extra="ignore")

    host: str = Field("0.0.0.0", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the HTTP server.")
    workers: int = Field(
        1,
        ge=1,
        description="Server worker processes (HTTP and decoding); with more than one, the "
        "models run once, in an engine process (see PLSTM_ENGINE).",
    )
    engine: Literal["auto", "inline", "process"] = Field(
        "auto",
        description="Where `plstm serve` runs the models: inline (every worker process loads "
        "every model and batches its own requests), process (one engine process loads the "
        "models and batches the requests of all workers, which only parse and answer HTTP), "
        "or auto (process when workers > 1, else inline).",
    )
    model_repository: Path = Field(
        Path("model_repository"),
        description="Directory laid out as <model name>/<version>/ with one checkpoint per "
        "version (versions are positive integers; the highest is the latest).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run: cpu, cuda, or auto (cuda when available)."
    )
    max_batch_size: int = Field(
        32, ge=1, description="Most requests (images or graphs) the dynamic batcher joins."
    )
    max_delay_ms: float = Field(
        0.0,
        ge=0,
        description="Longest time the batcher waits for more requests after the first one "
        "of a batch (milliseconds). With 0 a batch starts as soon as the model is free, so a "
        "lone request waits for nobody; under load batches still grow, from the requests that "
        "arrive while the previous batch runs.",
    )
    max_queue_size: int = Field(
        256,
        ge=1,
        description="Requests that may wait per model; beyond it the server answers 503 with "
        "Retry-After.",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Deadline of a request in seconds (a client may shorten it with the header "
        "X-Request-Timeout): a request not expected to be answered within half of it (the queue "
        "ahead at the measured drain rate plus its own predicted time) gets 503 at once, with a "
        "Retry-After computed from that rate; one predicted to take longer than it even on an "
        "idle server gets 413; one still unanswered at it gets 504.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest accepted request body in bytes (else 413)."
    )
    max_image_pixels: int = Field(
        4096 * 4096,
        ge=1,
        description="Largest accepted image (width x height, before any resize); larger "
        "images, including decompression bombs, are rejected.",
    )
    max_atoms: int = Field(
        500,
        ge=1,
        description="Most heavy atoms accepted per molecule (graph nodes: hydrogens that stay "
        "atoms, isotopes or unbonded, count too); atoms including hydrogens (listed, bracketed "
        "or implicit) are limited to 5 times it and bonds to 6 times it, all counted before the "
        "molecule is sanitized or ranked.",
    )
    max_smiles_chars: int | None = Field(
        None,
        ge=1,
        description="Longest SMILES string accepted (characters); unset: 32 x PLSTM_MAX_ATOMS.",
    )
    max_graphs_per_request: int = Field(
        64, ge=1, description="Most graphs accepted in one predict request."
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request head (request line and header fields) in bytes; larger "
        "heads get 431 and the connection is closed.",
    )
    max_header_count: int = Field(
        100, ge=1, description="Most header fields in one request (else 431)."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a request head may take to arrive, from its first byte (else 408 "
        "and the connection is closed): slow-header (slowloris) clients are cut off.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may take to arrive, from the end of its head "
        "(else 408 and the connection is closed).",
    )
    keep_alive_timeout_s: int = Field(
        5,
        ge=1,
        description="Seconds an idle connection (a new one that sends nothing, or a kept-alive "
        "one between requests) stays open.",
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Most open connections (or requests in progress) per worker process; "
        "beyond it new requests get 503 with Retry-After.",
    )
    max_explain_patches: int = Field(
        4096,
        ge=1,
        description="Most image patches one explanation (POST /v1/models/{name}/explain) may "
        "compute gradients for, counting each of its steps + 1 passes: patches x (steps + 1); "
        "larger requests get 422.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, every request except health and metrics must send it as "
        "'Authorization: Bearer <key>' or 'X-API-Key' (else 401).",
    )
    docs_require_api_key: bool = Field(
        True,
        description="With an API key set, the documentation (/docs, /redoc, /openapi.json) "
        "needs it too; false leaves it open.",
    )
    onnx: bool = Field(
        False,
        description="Serve every model through ONNX Runtime too (CUDA when available, else "
        "CPU): reuse model.onnx next to the checkpoint when it was exported from these "
        "weights, else export it at load; allows path=onnx, which path=auto then prefers "
        "(images at the exported resolution only). A failed export leaves the torch paths.",
    )
    inference_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Precision of the model calls: bfloat16 runs them under bf16 autocast "
        "(weights stay float32; the ONNX path and explanations stay float32), float32 without, "
        "auto bf16 on a GPU for checkpoints whose weights are stored in bf16 (their metrics "
        "were measured with those rounded weights), float32 otherwise.",
    )
    cuda_graphs: bool = Field(
        True,
        description="On a GPU, replay image-model forwards (parallel path, up to 1024 patches) "
        "from CUDA graphs captured per batch-size bucket (powers of two up to max_batch_size; "
        "the native resolution's are captured during warm-up): a pLSTM forward is thousands "
        "of small kernels, so this removes most of its latency.",
    )
    auto_chunkwise_tokens: int | None = Field(
        None,
        ge=1,
        description="The usual choice of path=auto for pLSTM vision models: the chunkwise form "
        "for images of more patches (tokens) than this, else the parallel form. Unset: 1024 "
        "where the CPU's C kernels serve the model (a C compiler is present; on a 2-core CPU the "
        "two forms are even at 32x32 patches and chunkwise is 1.8x faster at 48x48), else 3072 "
        "(the PyTorch forms: even at 48x48 patches on a 2-core CPU; chunkwise 2.4x faster at "
        "64x64 on an H100). auto never takes a path over the memory budget or the deadline, and "
        "with warm-up timings takes another path when it is predicted more than twice (and "
        "50 ms) faster.",
    )
    max_tokens: int = Field(
        65536,
        ge=1,
        description="Most tokens one request may hold: patches of an image (after resizing) or "
        "atoms of all graphs of a predict request; more gets 413.",
    )
    max_request_memory_mb: float | None = Field(
        None,
        gt=0,
        description="Peak memory (MiB) one model call may use, as predicted from the model's "
        "architecture, the input size and the path before a request is queued: a larger request "
        "gets 413 naming a path or size that fits, and batches stay within it. Unset: a quarter "
        "of the memory available at start-up on the CPU, half of the GPU's free memory.",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch threads of each process that runs models; 0: the CPU cores this "
        "process may use divided by the processes that run models (one engine process, or every "
        "inline worker). On a 2-core CPU, 1 thread answered one SMILES in 7.0 ms against 8.7 ms "
        "with 2 (docs/benchmarks/predict_latency_cpu2.md).",
    )
    log_level: str = Field("info", description=f"Logging level: one of {', '.join(LOG_LEVELS)}.")
    warmup: bool = Field(
        True,
        description="Run every inference path of every model once on a dummy input before "
        "the model is reported ready.",
    )

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {list(LOG_LEVELS)}, got {value!r}")
        return level

    @field_validator("max_request_memory_mb", "auto_chunkwise_tokens", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value

    @field_validator("max_smiles_chars", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once (``get_settings.cache_clear()``
    re-reads them)."""
    return Settings()


def model_process_threads(settings: Settings) -> int:
    """The torch threads a process that runs models should use (``settings.torch_threads``,
    or its automatic value)."""
    if settings.torch_threads:
        return settings.torch_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    engine_process = settings.engine == "process" or (
        settings.engine == "auto" and settings.workers > 1
    )
    return max(1, (cores or 1) // (1 if engine_process else settings.workers))
