"""Molecule models (kind ``graph``): predict-request graphs (``/v1``) or a SMILES tensor
(``/v2``) → :class:`MolGraph` → one model call per request (its molecules as one disjoint
union, batched with other requests' by the runtime) → classes or values per molecule, or OIP
tensors."""

from __future__ import annotations

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


async def _featurized(work: int, featurize: partial[list[MolGraph]]) -> Decoded[list[MolGraph]]:
    """The graphs and their size, once their limits were checked (``work``: graph nodes plus
    bonds): featurized in a decoder process when ``work`` is large, where RDKit holding the
    GIL cannot stall the event loop."""
    graphs = await run_heavy(featurize, heavy=work > INLINE_MOLECULE_WORK)
    size = await anyio.to_thread.run_sync(GraphBatch.of, graphs)
    return Decoded(graphs, size)


class GraphHandler(ModelHandler[list[MolGraph]]):
    """Requests to molecule models."""

    kind = "graph"
    v2_input = "smiles"
    smaller = "fewer or smaller molecules"

    async def decode_v1(self, body: PredictRequest, settings: Settings) -> Decoded[list[MolGraph]]:
        """The request's graphs (SMILES or atoms and bonds), every limit checked first."""
        limits = molecule_limits(settings)
        work = await anyio.to_thread.run_sync(check_request, body, limits)
        return await _featurized(work, partial(graphs_from_request, body, limits))

    async def decode_v2(
        self, tensor: DecodedTensor, runtime: Runtime, settings: Settings
    ) -> Decoded[list[MolGraph]]:
        limits = molecule_limits(settings)
        max_batch = settings.max_graphs_per_request
        work = await anyio.to_thread.run_sync(
            partial(check_tensor_smiles, tensor, max_batch=max_batch, limits=limits)
        )
        featurize = partial(graphs_from_tensor, tensor, max_batch=max_batch, limits=limits)
        return await _featurized(work, featurize)

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
