"""States of a model version and the reason classes that say why one cannot serve.

A version is READY once loaded and warmed up, else UNAVAILABLE with one reason class (below).
An UNAVAILABLE version stays so until the server restarts: requests for it get 503 without
``Retry-After`` and a body naming the reason class (:class:`ModelUnavailable`); the details
(file paths, hashes, exception text) go to the log only. A model directory without any version
is reported the same way, with :data:`NO_VERSIONS`.
"""

from __future__ import annotations

from typing import Any

from app.core.errors import ApiError

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"

NO_VERSIONS = "no_versions"
"""The model directory holds no version directory (positive integers without leading zeros)."""
CHECKPOINT_MISSING = "checkpoint_missing"
"""The version directory holds no checkpoint, or a checkpoint file is missing."""
CHECKPOINT_AMBIGUOUS = "checkpoint_ambiguous"
"""The version directory holds several checkpoints."""
CONFIG_INVALID = "config_invalid"
"""config.json or metrics.json is unreadable or invalid, or the architecture cannot be built
from the recorded config."""
CHECKPOINT_CORRUPT = "checkpoint_corrupt"
"""The weights fail their sha256 check or cannot be read."""
CHECKPOINT_MISMATCH = "checkpoint_mismatch"
"""The weights do not fit the architecture (missing or unexpected keys, other shapes)."""
ARCHITECTURE_UNSUPPORTED = "architecture_unsupported"
"""The architecture is neither an image nor a graph model: the server cannot feed it."""
INPUT_SPEC_INVALID = "input_spec_invalid"
"""The recorded image input spec or preprocessing cannot be applied."""
WARMUP_FAILED = "warmup_failed"
"""An inference path failed, or gave non-finite outputs, on the warm-up input."""
LOAD_FAILED = "load_failed"
"""Anything else that stopped the version from loading (I/O or device errors)."""

UNAVAILABLE_REASONS = (
    NO_VERSIONS,
    CHECKPOINT_MISSING,
    CHECKPOINT_AMBIGUOUS,
    CONFIG_INVALID,
    CHECKPOINT_CORRUPT,
    CHECKPOINT_MISMATCH,
    ARCHITECTURE_UNSUPPORTED,
    INPUT_SPEC_INVALID,
    WARMUP_FAILED,
    LOAD_FAILED,
)


class ModelUnavailable(ApiError):
    """Model ``name`` (``version``; None for a model without versions) cannot serve, and will
    not until the server restarts: answered 503 without Retry-After, naming ``reason``."""

    status_code = 503

    def __init__(self, name: str, version: int | None, reason: str) -> None:
        self.name = name
        self.version = version
        self.reason = reason
        what = f"model {name!r}" if version is None else f"model {name!r} version {version}"
        super().__init__(self.status_code, f"{what} is unavailable: {reason}")

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "reason": self.reason}

    def __str__(self) -> str:
        return str(self.args[0])


class LoadFailure(Exception):
    """Loading a version failed for ``reason`` (a class above); the message is the detail
    for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
