"""Training observability: ``metrics.jsonl`` rows, a PNG of the training curves, and Prometheus
gauges / counters served over HTTP by the training process (rank 0 only).

Prometheus names (one dedicated CollectorRegistry per exporter, so several can coexist):

- ``plstm_train_loss{split}``, ``plstm_train_accuracy{split}`` (split: train | val | test |
  another evaluation set such as extrapolation), ``plstm_train_rmse{split}`` for regression
- ``plstm_train_learning_rate``, ``plstm_train_samples_per_second``, ``plstm_train_epoch``,
  ``plstm_train_step``, ``plstm_train_steps_total`` (counter), ``plstm_train_best_metric``
- ``plstm_train_gpu_memory_bytes{device}`` (peak allocated; only set on CUDA)
- ``plstm_train_info{experiment, model}`` (constant 1)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import start_http_server


def _finite_or_none(value: Any) -> Any:
    """Strict-JSON value: NaN / ±inf become None (recursively in dicts and lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


class MetricsLog:
    """Appends one strict-JSON object per line to ``path`` (flushed after every row)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(_finite_or_none(dict(row)), allow_nan=False, sort_keys=False)
        with self.path.open("a") as f:
            f.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Every row written so far (empty when the file does not exist)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_curves(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = ""
) -> Path:
    """Draw the per-epoch rows (keys ``epoch``, ``train_loss``, ``val_loss``, ``lr`` and, when
    present, ``train_accuracy`` / ``val_accuracy`` or ``train_rmse`` / ``val_rmse``) as a
    three-panel PNG: loss, accuracy (or RMSE) and learning rate against the epoch.
    Written atomically (a temporary file renamed over ``path``)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # no pyplot: no global figure state, thread-safe

    path = Path(path)
    epochs = [r["epoch"] for r in rows]

    def series(key: str) -> list[float]:
        return [math.nan if r.get(key) is None else float(r[key]) for r in rows]

    quality = "accuracy" if any(r.get("val_accuracy") is not None for r in rows) else "rmse"
    fig = Figure(figsize=(12, 3.6), dpi=100)
    axes = fig.subplots(1, 3)
    for split in ("train", "val"):
        axes[0].plot(epochs, series(f"{split}_loss"), marker="o", label=split)
        axes[1].plot(epochs, series(f"{split}_{quality}"), marker="o", label=split)
    axes[2].plot(epochs, series("lr"), marker="o", color="tab:green")
    for ax, name in zip(axes, ("loss", quality, "learning rate (end of epoch)"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class TrainingMetrics:
    """Prometheus gauges of one training run in their own registry, optionally served over
    HTTP by :meth:`serve` (``port`` 0 picks a free port; see :attr:`port`)."""

    def __init__(self, experiment: str = "", model: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.loss = Gauge("plstm_train_loss", "Mean loss", ["split"], registry=r)
        self.accuracy = Gauge("plstm_train_accuracy", "Accuracy", ["split"], registry=r)
        self.rmse = Gauge("plstm_train_rmse", "Root mean squared error", ["split"], registry=r)
        self.learning_rate = Gauge("plstm_train_learning_rate", "Current learning rate", registry=r)
        self.samples_per_second = Gauge(
            "plstm_train_samples_per_second", "Training throughput (all ranks)", registry=r
        )
        self.epoch = Gauge("plstm_train_epoch", "Epochs completed", registry=r)
        self.step = Gauge("plstm_train_step", "Optimizer steps taken (global)", registry=r)
        self.steps_total = Counter(
            "plstm_train_steps", "Optimizer steps taken by this process", registry=r
        )
        self.best_metric = Gauge(
            "plstm_train_best_metric",
            "Best validation score so far (accuracy, or -RMSE for regression)",
            registry=r,
        )
        self.gpu_memory = Gauge(
            "plstm_train_gpu_memory_bytes", "Peak GPU memory allocated", ["device"], registry=r
        )
        info = Gauge("plstm_train_info", "Run description", ["experiment", "model"], registry=r)
        info.labels(experiment=experiment, model=model).set(1)
        self._server: Any = None
        self._thread: Any = None

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Start the HTTP exporter (a daemon thread) on ``addr:port``; returns the bound port."""
        if self._server is not None:
            raise ValueError("the metrics server is already running")
        if not 0 <= port <= 65535:
            raise ValueError(f"metrics port must be in [0, 65535], got {port}")
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        return self.port

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        """Stop the HTTP server (if one runs)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def update(self, values: Mapping[str, Any]) -> None:
        """Set the gauges from a metrics row: keys ``{split}_loss``, ``{split}_accuracy``,
        ``{split}_rmse`` (any split name), ``lr``, ``samples_per_second``, ``epoch``,
        ``step``, ``best``, ``gpu_memory_bytes`` + ``device``. Missing or None keys are skipped."""

        def have(key: str) -> bool:
            value = values.get(key)
            return isinstance(value, int | float) and math.isfinite(value)

        for key in values:
            split, _, name = key.rpartition("_")
            gauge = {"loss": self.loss, "accuracy": self.accuracy, "rmse": self.rmse}.get(name)
            if split and gauge is not None and have(key):
                gauge.labels(split=split).set(values[key])
        for key, gauge in (
            ("lr", self.learning_rate),
            ("samples_per_second", self.samples_per_second),
            ("epoch", self.epoch),
            ("step", self.step),
            ("best", self.best_metric),
        ):
            if have(key):
                gauge.set(values[key])
        if have("gpu_memory_bytes"):
            self.gpu_memory.labels(device=str(values.get("device", "cuda"))).set(
                values["gpu_memory_bytes"]
            )
