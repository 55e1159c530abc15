"""Explanations of a served model's answer: how much each image patch or atom contributes to
one output (:mod:`models.attribution`), computed by the model version's :class:`Explainer`.

An explainer has a batcher of its own that runs one explanation at a time (each one already
pushes ``steps`` inputs through a forward and a backward pass), with the queue limit and
timeout of the model's inference batcher, and it holds the model's lock while it computes, so
explanations and inference batches take turns on the model. Explanations never use CUDA
graphs or ONNX: they need gradients.

In process mode (``PLSTM_ENGINE=process``) the explainers live in the engine process: a
worker's :class:`app.engine.client.RemoteRuntime` sends an ``EXPLAIN`` message (:func:`explain`),
which the engine answers through :func:`app.engine.server.answer_explain_message`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from app.serving.batching import Batcher
from app.serving.images import WHITE
from app.serving.inference import InferenceFailed, ModelRuntime
from app.serving.model_thread import model_executor
from models.attribution import Attribution, graph_node_contributions, image_patch_contributions
from models.capabilities import use_method
from models.molecule_features import MolGraph, batch_graphs


@dataclass(frozen=True)
class ExplainRequest:
    """One explanation: ``input`` (image ``[C,H,W]`` model input, or one molecule graph), the
    explicit torch ``path`` (parallel, recurrent or chunkwise), ``steps`` of integrated
    gradients and the explained output index ``target`` (None: the largest output)."""

    input: torch.Tensor | MolGraph
    path: str
    steps: int
    target: int | None


@dataclass(frozen=True)
class Explained:
    """``contributions`` ``[X,Y]`` per patch or ``[N]`` per graph node (canonical atom order);
    ``outputs`` ``[K]`` at the input and ``baseline_outputs`` ``[K]`` at the baseline; the
    explained output ``target``; ``inference_s`` the time of the computation, ``queue_s`` the
    time waiting before it."""

    contributions: torch.Tensor
    outputs: torch.Tensor
    baseline_outputs: torch.Tensor
    target: int
    inference_s: float
    queue_s: float


class Explainer:
    """Computes the explanations of one model version (a runtime of an image or graph
    model), one at a time, through its own batcher."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.entry = runtime.entry
        self.spec = runtime.spec
        inference = runtime.batcher
        self.batcher = Batcher(
            self._run_batch,
            max_batch_size=1,
            max_delay_ms=0.0,
            max_queue_size=inference.max_queue_size,
            timeout_s=inference.timeout_s,
            model=self.entry.name,
            executor=model_executor() if self.entry.device.type == "cpu" else None,
        )
        self.baseline: torch.Tensor | None = None
        if self.spec is not None:  # the model input of a blank (white) image: [C,1,1]
            white = torch.full((self.spec.channels, 1, 1), WHITE, dtype=torch.uint8)
            self.baseline = self.spec.normalize(white)

    async def explain(self, request: ExplainRequest) -> Explained:
        start = time.perf_counter()
        attribution, seconds = await self.batcher.submit(request, request.path)
        waited = time.perf_counter() - start
        return Explained(
            contributions=attribution.contributions[0]
            if self.entry.kind == "image"
            else attribution.contributions,
            outputs=attribution.outputs[0],
            baseline_outputs=attribution.baseline_outputs[0],
            target=int(attribution.targets[0]),
            inference_s=seconds,
            queue_s=max(0.0, waited - seconds),
        )

    def _run_batch(self, key: Hashable, items: list[ExplainRequest]) -> list[Any]:
        (request,) = items
        start = time.perf_counter()
        try:
            attribution = self._attribute(request)
        except (ValueError, RuntimeError) as exc:
            return [InferenceFailed(exc)]
        return [(attribution, time.perf_counter() - start)]

    def _attribute(self, request: ExplainRequest) -> Attribution:
        entry, model = self.entry, self.entry.model
        if model is None:
            raise RuntimeError(f"model {entry.name!r} version {entry.version} is not loaded")
        dtype = next(model.parameters()).dtype
        targets = None if request.target is None else torch.tensor([request.target])
        with entry.lock:
            use_method(model, request.path)
            if isinstance(request.input, torch.Tensor):
                assert self.baseline is not None and self.spec is not None
                return image_patch_contributions(
                    model,
                    request.input.unsqueeze(0).to(entry.device, dtype=dtype),
                    self.baseline.to(entry.device, dtype=dtype),
                    self.spec.patch_size,
                    targets,
                    request.steps,
                )
            graph = request.input
            if graph.num_node_features != model.num_node_features:
                raise ValueError(
                    f"the graph has {graph.num_node_features} node features, model "
                    f"{entry.name!r} expects {model.num_node_features}"
                )
            x, edge_index, edge_attr, batch = batch_graphs([graph])
            return graph_node_contributions(
                model,
                x.to(entry.device, dtype=dtype),
                edge_index.to(entry.device),
                batch.to(entry.device),
                1,
                edge_attr.to(entry.device, dtype=dtype) if model.num_edge_features else None,
                targets,
                request.steps,
            )


class Explainers:
    """The explainer of every model version, made on first use."""

    def __init__(self) -> None:
        self._explainers: dict[tuple[str, int], Explainer] = {}

    def get(self, runtime: ModelRuntime) -> Explainer:
        key = (runtime.entry.name, runtime.entry.version)
        explainer = self._explainers.get(key)
        if explainer is None or explainer.entry is not runtime.entry:
            explainer = self._explainers[key] = Explainer(runtime)
        return explainer

    async def drain(self) -> None:
        """Finish every queued and running explanation; refuse new ones."""
        await asyncio.gather(*(e.batcher.drain() for e in self._explainers.values()))


class RemoteExplainer(Protocol):
    """A runtime whose model lives elsewhere (the engine process's
    :class:`app.engine.client.RemoteRuntime`) and is explained there."""

    async def explain(self, request: ExplainRequest) -> Explained: ...


async def explain(
    explainers: Explainers, runtime: ModelRuntime | RemoteExplainer, request: ExplainRequest
) -> Explained:
    """The explanation of ``request`` by ``runtime``'s model: computed here, or by the engine
    process when ``runtime`` is a :class:`RemoteExplainer`."""
    if isinstance(runtime, ModelRuntime):
        return await explainers.get(runtime).explain(request)
    return await runtime.explain(request)
