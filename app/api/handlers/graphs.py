"""Molecule models (kind ``graph``): predict-request graphs (``/v1``) or a SMILES tensor
(``/v2``) → :class:`MolGraph` → one model call per request (its molecules as one disjoint
union, batched with other requests' by the runtime) → classes or values per molecule, or OIP
tensors."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import anyio.to_thread

from app.api.body_decoding import DecodedTensor
from app.api.handlers.base import Decoded, ModelHandler, Predicted
from app.api.handlers.outputs import labels, ranked, task
from app.api.molecules import (
    INLINE_MOLECULE_WORK,
    check_request,
    check_tensor_smiles,
    graphs_from_request,
    graphs_from_tensor,
    molecule_limits,
)
from app.api.schemas.v1 import PredictRequest, PredictResponse, RegressionValue
from app.api.schemas.v2 import TensorMetadata
from app.core.settings import Settings
from app.serving.admission import Deadline
from app.serving.cost_formulas import GraphBatch, Size
from app.serving.decoder_pool import run_heavy
from app.serving.inference import Outcome
from app.serving.repository import ModelEntry
from app.serving.runtime import Runtime
from models.molecule_features import MolGraph

INLINE_CHARS = 256
"""Requests whose SMILES and atom / bond lists add up to at most this many items are checked
for their limits on the event loop: linear work of some 20 µs per 50 characters."""
INLINE_WORK = 64
"""Checked requests of at most this much work (graph nodes plus bonds) are also featurized and
sized on the event loop: at most about 0.8 ms (cholesterol, work 59: 0.54 ms featurizing,
0.21 ms sizing, 2-core EPYC), less than the worker-thread hops they replace."""


def _sized(graphs: list[MolGraph]) -> Decoded[list[MolGraph]]:
    return Decoded(graphs, GraphBatch.of(graphs))


async def _decoded(
    chars: int, check: Callable[[], int], featurize: Callable[[], list[MolGraph]]
) -> Decoded[list[MolGraph]]:
    """The graphs and their size: ``check`` the limits (linear work; returns the graph nodes
    plus bonds), then ``featurize``. Small requests stay on the event loop; one over
    :data:`INLINE_MOLECULE_WORK` is featurized in a decoder process (RDKit holds the GIL for up
    to seconds on large ring systems, which a worker thread would not hide from the event
    loop); the rest take one worker-thread hop."""
    work = check() if chars <= INLINE_CHARS else await anyio.to_thread.run_sync(check)
    if work <= INLINE_WORK:
        return _sized(featurize())
    if work > INLINE_MOLECULE_WORK:
        graphs = await run_heavy(featurize, heavy=True)
        return await anyio.to_thread.run_sync(_sized, graphs)
    return await anyio.to_thread.run_sync(lambda: _sized(featurize()))


class GraphHandler(ModelHandler[list[MolGraph]]):
    """Requests to molecule models."""

    kind = "graph"
    v2_input = "smiles"
    smaller = "fewer or smaller molecules"

    async def decode_v1(self, body: PredictRequest, settings: Settings) -> Decoded[list[MolGraph]]:
        """The request's graphs (SMILES or atoms and bonds), every limit checked first."""
        limits = molecule_limits(settings)
        chars = sum(
            len(g.smiles or "") + len(g.atoms or []) + len(g.bonds or []) for g in body.graphs
        )
        return await _decoded(
            chars, partial(check_request, body, limits), partial(graphs_from_request, body, limits)
        )

    async def decode_v2(
        self, tensor: DecodedTensor, runtime: Runtime, settings: Settings
    ) -> Decoded[list[MolGraph]]:
        limits = molecule_limits(settings)
        max_batch = settings.max_graphs_per_request
        chars = sum(len(str(s)) for s in tensor.values) if tensor.datatype == "BYTES" else 0
        return await _decoded(
            chars,
            partial(check_tensor_smiles, tensor, max_batch=max_batch, limits=limits),
            partial(graphs_from_tensor, tensor, max_batch=max_batch, limits=limits),
        )

    async def _run(
        self,
        runtime: Runtime,
        inputs: list[MolGraph],
        size: Size,
        path: str,
        deadline: Deadline,
    ) -> Outcome:
        assert isinstance(size, GraphBatch)
        return await runtime.predict(inputs, path, deadline, size=size)

    def encode_v1(
        self,
        entry: ModelEntry,
        decoded: Decoded[list[MolGraph]],
        predicted: Predicted,
        *,
        start: float,
    ) -> PredictResponse:
        """The ``/v1`` answer: per molecule, its classes (most probable first) or values."""
        regression = task(entry) == "regression"
        names = labels(entry, predicted.outputs.shape[1])
        results = []
        for g, (graph, row) in enumerate(zip(decoded.inputs, predicted.outputs, strict=True)):
            if regression:
                values = [
                    RegressionValue(name=n, value=v)
                    for n, v in zip(names, row.tolist(), strict=True)
                ]
                results.append({"index": g, "num_atoms": graph.num_nodes, "values": values})
            else:
                predictions = ranked(row.softmax(-1), names, len(names))
                results.append(
                    {"index": g, "num_atoms": graph.num_nodes, "predictions": predictions}
                )
        return PredictResponse(
            model=entry.name,
            version=str(entry.version),
            path=predicted.path,
            task="regression" if regression else "classification",
            timings=predicted.timings(start),
            results=results,  # type: ignore[arg-type]
        )

    def v2_input_metadata(self, entry: ModelEntry) -> TensorMetadata:
        return TensorMetadata(name=self.v2_input, datatype="BYTES", shape=[-1])
