"""Where an ONNX export of a checkpoint lives and its JSON sidecar (what was exported, from which
weights, how it was checked): shared by the exporter and the runtime."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ONNX_FILE = "model.onnx"


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """The JSON sidecar of an ONNX file: ``<file>.json`` (``model.onnx.json``)."""
    path = Path(onnx_path)
    return path.with_name(path.name + ".json")


def read_sidecar(onnx_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of an ONNX file, or None when it is missing or unreadable."""
    try:
        info = json.loads(sidecar_path(onnx_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None
