"""Prometheus metrics of the server, in a dedicated registry (not the process-global one).

Names and labels (fixed; dashboards depend on them):

- ``plstm_requests_total{model,endpoint,status}`` counter
- ``plstm_request_duration_seconds{model,endpoint}``, ``plstm_queue_duration_seconds{model}``,
  ``plstm_inference_duration_seconds{model,path}``, ``plstm_batch_size{model}`` histograms
  (the inference histogram's ``_count`` is the per-path inference count)
- ``plstm_inflight_requests{model}``, ``plstm_queue_depth{model}`` gauges
- ``plstm_model_info{model,version,architecture}`` (1 per loaded version),
  ``plstm_model_eval_metric{model,metric}`` (the checkpoint's metrics.json values)
- ``plstm_gpu_memory_bytes{device}`` (allocated bytes per CUDA device; only with CUDA)

With an engine process (``PLSTM_ENGINE=process``) the :data:`ENGINE_FAMILIES` are recorded
where the batchers run, in the engine (:meth:`Metrics.render_engine`); a worker's
``Metrics(engine_families=False)`` leaves them out of its exposition and ``GET /metrics``
appends the engine's, so every family appears once.

With several worker processes (``plstm serve --workers N``) each worker records into files of
its own in a shared directory (prometheus_client's multiprocess mode, see
:mod:`app.core.multiprocess_metrics`) and ``GET /metrics``, whichever worker answers it, sums the
series of all of them: counters and histograms add up, the in-flight, queue and GPU-memory
gauges are the sum over live workers, the model info and evaluation gauges are one value each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from app.core.multiprocess_metrics import MULTIPROCESS_ENV, forget_dead_workers

# The contract fixes the exposed names; the *_created series would add one per counter and
# histogram (this switch is process-wide).
disable_created_metrics()

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ENGINE_FAMILIES = (
    "plstm_queue_duration_seconds",
    "plstm_inference_duration_seconds",
    "plstm_batch_size",
    "plstm_queue_depth",
    "plstm_gpu_memory_bytes",
)
"""Families recorded by the batchers and the models (where inference runs)."""
_SAMPLE_SUFFIXES = ("", "_bucket", "_count", "_sum")
EVAL_METRIC_KEYS = ("accuracy", "rmse", "mae", "loss")
"""The values of a metrics.json result exported as ``plstm_model_eval_metric`` (as
``<result>/<key>``, e.g. ``test/accuracy``); bookkeeping keys such as seed are left out."""


class Metrics:
    """All server metrics in one :class:`CollectorRegistry`; one instance per app.

    ``engine_families=False`` (a worker whose models run in an engine process): the
    :data:`ENGINE_FAMILIES` live in a registry of their own that :meth:`render` leaves out,
    and there is no GPU gauge. With ``MULTIPROCESS_ENV`` set, :meth:`render` sums the
    series of every process that records there (module docstring)."""

    def __init__(self, cuda: bool | None = None, *, engine_families: bool = True) -> None:
        # multiprocess mode is chosen when prometheus_client is imported: trust the variable
        # only if the values it made are file-backed
        file_backed = prometheus_values.ValueClass is not prometheus_values.MutexValue
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_ENV) if file_backed else None
        self.registry = CollectorRegistry()
        r = self.registry
        engine = r if engine_families else CollectorRegistry()
        self.requests = Counter(
            "plstm_requests_total",
            "Requests answered, by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "plstm_request_duration_seconds",
            "Time from receiving a request to answering it.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "plstm_queue_duration_seconds",
            "Time a request waited in the batching queue before its batch started.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=engine,
        )
        self.inference_duration = Histogram(
            "plstm_inference_duration_seconds",
            "Time of one batched model call, by inference path.",
            ["model", "path"],
            buckets=LATENCY_BUCKETS,
            registry=engine,
        )
        self.batch_size = Histogram(
            "plstm_batch_size",
            "Requests per executed batch.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=engine,
        )
        self.inflight = Gauge(
            "plstm_inflight_requests",
            "Requests being handled now.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            "plstm_queue_depth",
            "Requests waiting for a batch slot.",
            ["model"],
            registry=engine,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "plstm_model_info",
            "1 for every loaded model version.",
            ["model", "version", "architecture"],
            registry=r,
            multiprocess_mode="max",
        )
        self.eval_metric = Gauge(
            "plstm_model_eval_metric",
            "Evaluation results recorded in the checkpoint's metrics.json.",
            ["model", "metric"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        if not engine_families:
            cuda = False
        self.cuda = torch.cuda.is_available() if cuda is None else cuda
        self.gpu_memory = (
            Gauge(
                "plstm_gpu_memory_bytes",
                "GPU memory allocated by tensors, per CUDA device.",
                ["device"],
                registry=r,
                multiprocess_mode="livesum",
            )
            if self.cuda
            else None
        )

    def observe_request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and record its duration."""
        self.requests.labels(model, endpoint, str(status)).inc()
        self.request_duration.labels(model, endpoint).observe(seconds)

    def observe_inference(self, model: str, path: str, seconds: float) -> None:
        self.inference_duration.labels(model, path).observe(seconds)

    def set_model_info(
        self, model: str, version: int, architecture: str, metrics: Mapping[str, Any]
    ) -> None:
        """Record a loaded model version and the evaluation values of its metrics.json
        (``{result: {"accuracy": ..., ...}}`` → metric ``result/accuracy``)."""
        self.model_info.labels(model, str(version), architecture).set(1)
        for name, value in eval_metrics(metrics).items():
            self.eval_metric.labels(model, name).set(value)

    def update_gpu_memory(self) -> None:
        if self.gpu_memory is None:
            return
        for i in range(torch.cuda.device_count()):
            self.gpu_memory.labels(f"cuda:{i}").set(torch.cuda.memory_allocated(i))

    def render(self) -> tuple[bytes, str]:
        """The text exposition for ``GET /metrics`` and its content type."""
        self.update_gpu_memory()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        forget_dead_workers(self.multiprocess_dir)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process, self.multiprocess_dir)
        return generate_latest(every_process), CONTENT_TYPE_LATEST

    def render_engine(self) -> bytes:
        """The text exposition of the :data:`ENGINE_FAMILIES` alone (what an engine process
        adds to its workers' ``/metrics``)."""
        self.update_gpu_memory()
        names = [f + suffix for f in ENGINE_FAMILIES for suffix in _SAMPLE_SUFFIXES]
        return generate_latest(self.registry.restricted_registry(names))


def eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{"<result>/<key>": value}`` for the :data:`EVAL_METRIC_KEYS` numbers in metrics.json."""
    out: dict[str, float] = {}
    for result, values in metrics.items():
        if not isinstance(values, Mapping):
            continue
        for key in EVAL_METRIC_KEYS:
            value = values.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{result}/{key}"] = float(value)
    return out


@lru_cache(maxsize=1)
def get_metrics() -> Metrics:
    """The process-wide :class:`Metrics`."""
    return Metrics()


def render() -> tuple[bytes, str]:
    """``get_metrics().render()``: (body, content type) for ``GET /metrics``."""
    return get_metrics().render()
