"""Model entries without their models, for workers whose models run in the engine process.

The engine sends every :class:`app.serving.repository.ModelEntry` as JSON metadata
(:func:`entry_meta`) when a worker connects; the worker rebuilds entries (:func:`entry_from_meta`)
that the routes read exactly as inline ones: state, reason, config, labels, specs, metrics, ONNX
status, the inference paths and the cost profile (so a worker checks cost limits and picks
``path=auto`` before it forwards a request). The entry has no model (what the architecture can do is
declared by its class, :mod:`models.capabilities`) and its ``onnx_session`` is a marker that is
never run in the worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from app.serving.cost_profile import CostProfile
from app.serving.repository import ModelEntry, ModelRepository


class RemoteSession:
    """Marks an entry whose ONNX session lives in the engine (``path=onnx`` is offered)."""


def entry_meta(entry: ModelEntry, serving: bool) -> dict[str, Any]:
    """JSON-able description of ``entry``; ``serving``: the engine has a runtime for it."""
    return {
        "name": entry.name,
        "version": entry.version,
        "directory": str(entry.directory),
        "state": entry.state,
        "reason": entry.reason,
        "architecture": entry.architecture,
        "config": entry.config,
        "labels": entry.labels,
        "input_spec": entry.input_spec,
        "preprocessing": entry.preprocessing,
        "metrics": entry.metrics,
        "weights_sha256": entry.weights_sha256,
        "device": str(entry.device),
        "onnx": entry.onnx_session is not None,
        "onnx_export": entry.onnx_export,
        "onnx_error": entry.onnx_error,
        "cost": entry.cost.to_meta() if entry.cost is not None else None,
        "serving": serving,
    }


def entry_from_meta(meta: dict[str, Any]) -> ModelEntry:
    """The worker-side entry of :func:`entry_meta`'s output (see the module docstring)."""
    entry = ModelEntry(
        name=meta["name"],
        version=int(meta["version"]),
        directory=Path(meta["directory"]),
        state=meta["state"],
        reason=meta["reason"],
        architecture=meta["architecture"],
        config=dict(meta["config"]),
        labels=list(meta["labels"]),
        input_spec=meta["input_spec"],
        preprocessing=meta["preprocessing"],
        metrics=dict(meta["metrics"]),
        weights_sha256=meta["weights_sha256"],
        device=torch.device(meta["device"]),
        onnx_session=RemoteSession() if meta["onnx"] else None,
        onnx_export=meta["onnx_export"],
        onnx_error=meta["onnx_error"],
        cost=CostProfile.from_meta(meta["cost"]) if meta.get("cost") else None,
    )
    return entry


class RemoteRepository(ModelRepository):
    """A worker's repository: the engine's entries (:meth:`set_entries`), never loaded here."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "cpu", warmup=False)

    def load_all(self) -> list[ModelEntry]:
        raise RuntimeError("a worker's repository is filled by the engine (set_entries)")

    def set_entries(self, entries: list[ModelEntry], unversioned: list[str]) -> None:
        """Replace the entries and the models without versions (as
        :meth:`ModelRepository.load_all` does)."""
        grouped: dict[str, dict[int, ModelEntry]] = {}
        for entry in entries:
            grouped.setdefault(entry.name, {})[entry.version] = entry
        self._entries = {
            name: dict(sorted(versions.items())) for name, versions in sorted(grouped.items())
        }
        self._unversioned = sorted(unversioned)
