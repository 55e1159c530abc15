"""Model outputs → answers: labels, ranked predictions, timings, and the refusal of non-finite
outputs."""

from __future__ import annotations

import time

import torch

from app.api.schemas.common import Prediction, Timings
from app.core.errors import ApiError
from app.serving.repository import ModelEntry


def task(entry: ModelEntry) -> str:
    """``classification`` or ``regression``, as the checkpoint's config says."""
    return str(entry.config.get("task", "classification"))


def labels(entry: ModelEntry, count: int) -> list[str]:
    """The checkpoint's labels of ``count`` outputs, or their indices as strings."""
    return list(entry.labels) if len(entry.labels) == count else [str(i) for i in range(count)]


def ranked(probabilities: torch.Tensor, names: list[str], k: int) -> list[Prediction]:
    """The ``k`` most probable of ``probabilities`` ``[C]``, most probable first."""
    values, indices = probabilities.topk(k)
    return [
        Prediction(label=names[i], index=i, probability=min(1.0, max(0.0, p)))
        for p, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def finite_outputs(outputs: torch.Tensor, name: str) -> torch.Tensor:
    """``outputs`` of model ``name`` for one request, unless some are NaN or infinite: then
    422, as no answer (JSON has no NaN) could be given for this input."""
    if not bool(torch.isfinite(outputs).all()):
        raise ApiError(
            422,
            f"model {name!r} gave non-finite outputs (NaN or infinity) for this input; its "
            "values are likely far outside what the model was trained on",
        )
    return outputs


def timings(queue_s: float, inference_s: float, start: float) -> Timings:
    """An answer's timings: seconds queued and in the model, and the whole time since the
    request arrived at ``start`` (``time.perf_counter``)."""
    return Timings(
        queue_ms=queue_s * 1000,
        inference_ms=inference_s * 1000,
        total_ms=(time.perf_counter() - start) * 1000,
    )
