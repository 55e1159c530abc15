"""One :class:`ModelRuntime` per READY model version: its dynamic batcher and batch functions.

Images are batched per group key ``(C, H, W, path)`` (one stacked tensor per batch), graph
requests per ``path`` (all graphs of the batch's requests in one disjoint-union call). If a
batch call fails, each of its items is run alone, so a bad item never harms the others: only
its own caller gets the error (:class:`InferenceFailed`).

With the entry's cost profile (:mod:`app.serving.cost_profile`) every item is queued with its
predicted time as its work and its size, so the batcher admits it only when it can be answered by
its deadline (:mod:`app.serving.admission`) and closes a batch before its predicted memory would
exceed the per-call budget. When every caller of the running batch has gone (deadline passed, client
disconnected), the model stops at the next block boundary (:class:`BatchCancelled`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from app.core.errors import ApiError
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.serving import backends
from app.serving.batching import Batcher, Deadline
from app.serving.cost_formulas import GraphBatch, ImageBatch, Size
from app.serving.images import ImageSpec
from app.serving.model_state import INPUT_SPEC_INVALID
from app.serving.model_thread import model_executor
from app.serving.repository import ModelEntry, ModelRepository
from models.molecule_features import MolGraph

logger = logging.getLogger(__name__)


class InferenceFailed(ApiError):
    """The model call failed for one request: 422 when the input did not fit the model
    (ValueError), else 500."""

    def __init__(self, exc: Exception) -> None:
        status = 422 if isinstance(exc, ValueError) else 500
        super().__init__(status, f"inference failed: {exc}")


class BatchCancelled(RuntimeError):
    """Raised inside the model when every caller of the running batch has gone."""


@dataclass(frozen=True)
class Outcome:
    """``outputs``: logits ``[C]`` of one image, or outputs ``[G,C]`` of a request's G graphs;
    ``inference_s``: time of the batch's model call; ``queue_s``: time waiting before it."""

    outputs: torch.Tensor
    inference_s: float
    queue_s: float


class ModelRuntime:
    """A READY model version, its :class:`ImageSpec` (image models) and its batcher."""

    def __init__(
        self, entry: ModelEntry, settings: Settings, metrics: Metrics, spec: ImageSpec | None
    ) -> None:
        self.entry = entry
        self.spec = spec
        self.metrics = metrics
        cost = entry.cost
        self.batcher = Batcher(
            self._run_batch,
            settings.max_batch_size,
            settings.max_delay_ms,
            settings.max_queue_size,
            timeout_s=settings.request_timeout_s,
            metrics=metrics,
            model=entry.name,
            fits=self._fits if cost is not None else None,
            drain_prior=1.0 if cost is not None and cost.timed else None,
            executor=model_executor() if entry.device.type == "cpu" else None,
        )
        self._install_cancel_checks()

    def _install_cancel_checks(self) -> None:
        """Before every block of the model: stop when the batch has no caller left."""
        blocks = getattr(self.entry.model, "blocks", None)
        if not isinstance(blocks, torch.nn.ModuleList):
            return

        def check(module: torch.nn.Module, args: Any) -> None:
            if self.batcher.cancel_requested:
                raise BatchCancelled("every caller of this batch has gone")

        for block in blocks:
            block.register_forward_pre_hook(check)

    def _fits(self, key: Hashable, size: Size) -> bool:
        assert self.entry.cost is not None
        return self.entry.cost.fits(_key_path(key), size)

    def _work(self, path: str, size: Size) -> float | None:
        """Predicted seconds of ``size`` alone on ``path`` (None when not calibrated)."""
        cost = self.entry.cost
        if cost is None or path not in cost.paths:
            return None
        return cost.estimate(path, size).seconds

    def _call(self, path: str, items: Sequence[Any]) -> list[torch.Tensor]:
        """Run ``items`` as one model call; one output per item."""
        if self.entry.kind == "image":
            logits = backends.forward_images(self.entry, torch.stack(list(items)), path)
            return list(logits.unbind(0))
        graphs = [g for item in items for g in item]
        outputs = backends.forward_graphs(self.entry, graphs, path)
        return list(outputs.split([len(item) for item in items]))

    def _timed(self, path: str, items: Sequence[Any]) -> list[tuple[torch.Tensor, float]]:
        start = time.perf_counter()
        outputs = self._call(path, items)
        seconds = time.perf_counter() - start
        self.metrics.observe_inference(self.entry.name, path, seconds)
        return [(out, seconds) for out in outputs]

    def _run_batch(self, key: Hashable, items: list[Any]) -> list[Any]:
        path = _key_path(key)
        try:
            return self._timed(path, items)
        except BatchCancelled as exc:
            logger.warning("batch of %d on %s stopped: %s", len(items), path, exc)
            return [exc] * len(items)
        except (ValueError, RuntimeError) as exc:
            if len(items) == 1:
                return [InferenceFailed(exc)]
            logger.warning(
                "batch of %d on %s failed (%s); running items alone", len(items), path, exc
            )
        results: list[Any] = []
        for item in items:
            try:
                results.extend(self._timed(path, [item]))
            except (ValueError, RuntimeError) as exc:
                results.append(InferenceFailed(exc))
        return results

    async def _submit(
        self, item: Any, key: Hashable, size: Size | None, deadline: Deadline | None
    ) -> Outcome:
        start = time.perf_counter()
        work = None if size is None else self._work(_key_path(key), size)
        output, inference_s = await self.batcher.submit(
            item, key, deadline=deadline, work=work, size=size
        )
        waited = time.perf_counter() - start
        return Outcome(output, inference_s, max(0.0, waited - inference_s))

    def admit(self, deadline: Deadline) -> None:
        """Shed a request at once (before it is decoded) when even a request of no work would
        not be admitted now (:meth:`app.serving.batching.Batcher.admit`)."""
        self.batcher.admit(deadline)

    async def classify(
        self, image: torch.Tensor, path: str, deadline: Deadline | None = None
    ) -> Outcome:
        """image ``[C,H,W]`` model input, explicit ``path`` (as the route resolved it: not
        resolved again) → logits ``[C]``; ``deadline`` default: ``request_timeout_s`` from now."""
        c, h, w = image.shape
        size = None
        if self.entry.cost is not None:
            patch = self.entry.cost.arch.patch
            size = ImageBatch(1, h // patch, w // patch)
        return await self._submit(image, (c, h, w, path), size, deadline)

    async def predict(
        self,
        graphs: list[MolGraph],
        path: str,
        deadline: Deadline | None = None,
        *,
        size: GraphBatch | None = None,
    ) -> Outcome:
        """G graphs, explicit ``path`` → outputs ``[G,C]`` (``deadline`` as in
        :meth:`classify`; ``size``: their :class:`GraphBatch` when known, else it is computed
        off the event loop)."""
        if size is None and self.entry.cost is not None:
            size = await asyncio.to_thread(GraphBatch.of, graphs)
        return await self._submit(graphs, path, size, deadline)


def _key_path(key: Hashable) -> str:
    """The path of a batch group key: ``(C, H, W, path)`` or ``path``."""
    path = key[-1] if isinstance(key, tuple) else key
    assert isinstance(path, str)
    return path


def build_runtimes(
    repository: ModelRepository, settings: Settings, metrics: Metrics
) -> dict[tuple[str, int], ModelRuntime]:
    """Runtimes of every READY version; an image model whose recorded input spec is unusable
    is marked UNAVAILABLE instead."""
    runtimes: dict[tuple[str, int], ModelRuntime] = {}
    for entry in repository.entries():
        if not entry.ready:
            continue
        spec = None
        if entry.kind == "image":
            try:
                spec = ImageSpec.from_metadata(entry.input_spec, entry.preprocessing, entry.config)
            except ValueError as exc:
                entry.mark_unavailable(INPUT_SPEC_INVALID, f"unusable input spec: {exc}")
                continue
        runtimes[(entry.name, entry.version)] = ModelRuntime(entry, settings, metrics, spec)
    return runtimes
