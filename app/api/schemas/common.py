"""Bodies both APIs share: the error answer (:class:`ErrorResponse`, and
:func:`validation_error_message` that words pydantic's errors for it), timings, predictions,
image sizes, ``GET /healthz`` (:class:`Health`) and the base of every schema. Every field carries
a description and every model an example, so ``/docs`` documents them.

The schema modules import no torch and no RDKit: the body decoder processes
(:mod:`app.serving.decoder_pool`) load them to validate large bodies away from the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

UnavailableReason = Literal[
    "no_versions",
    "checkpoint_missing",
    "checkpoint_ambiguous",
    "config_invalid",
    "checkpoint_corrupt",
    "checkpoint_mismatch",
    "architecture_unsupported",
    "input_spec_invalid",
    "warmup_failed",
    "load_failed",
]
"""Why a model version is UNAVAILABLE (:mod:`app.serving.model_state`)."""


PATHS = ("auto", "parallel", "recurrent", "chunkwise", "onnx")
"""Inference paths a client may ask for; ``auto`` lets the server choose."""


RESIZE_MODES = ("model", "native")


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _example(**example: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


class ErrorResponse(_Schema):
    """Every error answer (4xx / 5xx) of both APIs."""

    model_config = _example(error="graphs[2].smiles: invalid SMILES 'C1CC'")
    error: str = Field(description="What went wrong, naming the field or limit at fault.")
    reason: UnavailableReason | None = Field(
        default=None,
        description="Only in the 503 of a model version that cannot serve until the server "
        "restarts (no Retry-After): why, as a reason class.",
    )


class Timings(_Schema):
    """Server-side durations of one request, in milliseconds."""

    model_config = _example(queue_ms=1.2, inference_ms=8.4, total_ms=11.0)
    queue_ms: float = Field(ge=0, description="Time spent waiting in the batching queue.")
    inference_ms: float = Field(ge=0, description="Time of the model call of the batch.")
    total_ms: float = Field(ge=0, description="Time from receiving the request to answering.")


class Prediction(_Schema):
    """One class and its probability."""

    model_config = _example(label="pointing", index=1, probability=0.93)
    label: str = Field(description="Class name recorded in the checkpoint.")
    index: int = Field(ge=0, description="Class index (output position of the model).")
    probability: float = Field(ge=0, le=1, description="Softmax probability of the class.")


class ImageSize(_Schema):
    """An image size in pixels."""

    model_config = _example(height=96, width=96)
    height: int = Field(ge=1, description="Height in pixels.")
    width: int = Field(ge=1, description="Width in pixels.")


class VersionState(_Schema):
    """The state of one model version in ``GET /healthz``."""

    model_config = _example(state="UNAVAILABLE", reason="checkpoint_corrupt")
    state: Literal["READY", "UNAVAILABLE"] = Field(description="READY or UNAVAILABLE.")
    reason: UnavailableReason | None = Field(
        default=None, description="Why it is UNAVAILABLE; null when READY."
    )


class EngineState(_Schema):
    """The connection of this worker to the inference engine process."""

    model_config = _example(connected=True)
    connected: bool = Field(description="Whether the engine process is connected.")


class Health(_Schema):
    """``GET /healthz``: liveness with the state of every model version."""

    model_config = _example(
        status="ok",
        ready=True,
        draining=False,
        engine="inline",
        models={
            "arrow-pointing/1": {"state": "READY", "reason": None},
            "solubility/2": {"state": "UNAVAILABLE", "reason": "checkpoint_corrupt"},
            "empty": {"state": "UNAVAILABLE", "reason": "no_versions"},
        },
    )
    status: Literal["ok"] = Field(description="Always ok: the server answers.")
    ready: bool = Field(description="Whether the server takes inference requests.")
    draining: bool = Field(description="Whether the server is shutting down.")
    engine: Literal["inline"] | EngineState = Field(
        description="inline: the models run in this process; else the engine connection."
    )
    models: dict[str, VersionState] = Field(
        description="Every model version as name/version (a model without versions: its "
        "name alone) with its state."
    )


def format_location(loc: Sequence[int | str]) -> str:
    """A pydantic error location → ``graphs[2].smiles`` (a leading ``body`` is dropped)."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_error_message(errors: Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    """Pydantic / FastAPI validation errors → one line for :class:`ErrorResponse`, each
    problem as ``field.path: message`` (at most ``limit``, then a count)."""
    lines = []
    for error in errors[:limit]:
        where = format_location(error.get("loc", ()))
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return "; ".join(lines) or "invalid request"
