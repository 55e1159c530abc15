"""Metric names, labels and types as fixed by the service contract (parsed from the text)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from app.core.metrics import Metrics, eval_metrics, get_metrics, render

EXPECTED = {
    "plstm_requests": ("counter", {"model", "endpoint", "status"}),
    "plstm_request_duration_seconds": ("histogram", {"model", "endpoint"}),
    "plstm_queue_duration_seconds": ("histogram", {"model"}),
    "plstm_inference_duration_seconds": ("histogram", {"model", "path"}),
    "plstm_batch_size": ("histogram", {"model"}),
    "plstm_inflight_requests": ("gauge", {"model"}),
    "plstm_queue_depth": ("gauge", {"model"}),
    "plstm_model_info": ("gauge", {"model", "version", "architecture"}),
    "plstm_model_eval_metric": ("gauge", {"model", "metric"}),
}
METRICS_JSON = {
    "validation": {"dataset": "d", "split": "val", "seed": 3, "loss": 0.5, "accuracy": 0.8},
    "test": {"dataset": "d", "split": "test", "seed": 3, "accuracy": 0.7, "num_samples": 9},
}


def _filled(cuda: bool) -> Metrics:
    m = Metrics(cuda=cuda)
    m.observe_request("vis", "classify", 200, 0.03)
    m.observe_request("vis", "classify", 200, 0.2)
    m.observe_request("vis", "classify", 503, 0.001)
    m.observe_inference("vis", "chunkwise", 0.02)
    m.batch_size.labels("vis").observe(4)
    m.queue_duration.labels("vis").observe(0.004)
    m.inflight.labels("vis").inc()
    m.queue_depth.labels("vis").set(2)
    m.set_model_info("vis", 3, "plstm_vis_t", METRICS_JSON)
    return m


def _families(body: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_names_types_and_labels() -> None:
    body, content_type = _filled(cuda=False).render()
    assert content_type.startswith("text/plain")
    families = _families(body)
    assert set(families) == set(EXPECTED)  # nothing else, no GPU gauge without CUDA
    for name, (kind, labels) in EXPECTED.items():
        family = families[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)


def test_values() -> None:
    families = _families(_filled(cuda=False).render()[0])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert (
        samples[
            (
                "plstm_requests_total",
                (("endpoint", "classify"), ("model", "vis"), ("status", "200")),
            )
        ]
        == 2
    )
    assert (
        samples[
            (
                "plstm_requests_total",
                (("endpoint", "classify"), ("model", "vis"), ("status", "503")),
            )
        ]
        == 1
    )
    assert (
        samples[
            ("plstm_request_duration_seconds_count", (("endpoint", "classify"), ("model", "vis")))
        ]
        == 3
    )
    assert (
        samples[
            ("plstm_inference_duration_seconds_count", (("model", "vis"), ("path", "chunkwise")))
        ]
        == 1
    )
    assert samples[("plstm_batch_size_sum", (("model", "vis"),))] == 4
    assert samples[("plstm_queue_depth", (("model", "vis"),))] == 2
    assert samples[("plstm_inflight_requests", (("model", "vis"),))] == 1
    assert (
        samples[
            (
                "plstm_model_info",
                (("architecture", "plstm_vis_t"), ("model", "vis"), ("version", "3")),
            )
        ]
        == 1
    )
    evals = {
        dict(k)["metric"]: v for (n, k), v in samples.items() if n == "plstm_model_eval_metric"
    }
    assert evals == {"validation/loss": 0.5, "validation/accuracy": 0.8, "test/accuracy": 0.7}


def test_gpu_gauge_only_with_cuda() -> None:
    m = _filled(cuda=True)
    m.gpu_memory.labels("cuda:0").set(1234)
    m.update_gpu_memory = lambda: None  # no real device here
    family = _families(m.render()[0])["plstm_gpu_memory_bytes"]
    assert family.type == "gauge"
    assert [(s.labels, s.value) for s in family.samples] == [({"device": "cuda:0"}, 1234)]


def test_eval_metrics_skips_bookkeeping() -> None:
    assert eval_metrics({"x": {"seed": 1, "accuracy": True, "rmse": 0.25}, "y": 3}) == {
        "x/rmse": 0.25
    }


def test_registries_are_separate_and_default_renders() -> None:
    a, b = Metrics(cuda=False), Metrics(cuda=False)
    a.observe_request("m", "infer", 200, 0.1)
    assert (
        b.registry.get_sample_value(
            "plstm_requests_total", {"model": "m", "endpoint": "infer", "status": "200"}
        )
        is None
    )
    assert get_metrics() is get_metrics()
    body, _ = render()
    assert b"plstm_requests_total" in body
