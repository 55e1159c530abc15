"""The steps between a parsed request and its answer for one model kind, so that the routes
only parse and respond (the kind is the one the model side declares, ``ModelEntry.kind``):

1. decode the payload into model inputs and their cost size: ``decode_v1`` takes the ``/v1``
   request, :meth:`ModelHandler.decode_v2` the Open Inference Protocol input tensor; decoding
   that can take long runs off the event loop (a worker thread, or a decoder process);
2. :meth:`ModelHandler.choose` the inference path, once, within the cost limits;
3. :meth:`ModelHandler.predict`: the inputs through the model's runtime on that path →
   finite outputs ``[B,C]`` and the time they waited and ran;
4. encode the outputs: ``encode_v1`` builds the ``/v1`` answer,
   :meth:`ModelHandler.encode_v2` the v2 output tensors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import torch
from fastapi import Request

from app.api.body_decoding import DecodedTensor
from app.api.handlers.outputs import finite_outputs, task, timings
from app.api.schemas.common import Timings
from app.api.schemas.v2 import ResponseOutput, TensorMetadata
from app.core.errors import ApiError
from app.core.settings import Settings
from app.serving import cost_limits
from app.serving.admission import Deadline
from app.serving.cost_formulas import Size
from app.serving.deadlines import unless_disconnected
from app.serving.inference import Outcome
from app.serving.repository import ModelEntry
from app.serving.runtime import Runtime

Inputs = TypeVar("Inputs")


@dataclass(frozen=True)
class Decoded(Generic[Inputs]):
    """A request's model inputs and the :mod:`app.serving.cost_formulas` size of one model call
    on them (the path is chosen for it)."""

    inputs: Inputs
    size: Size


@dataclass(frozen=True)
class Predicted:
    """Finite ``outputs`` ``[B,C]`` (one row per image or molecule), the ``path`` they ran on,
    the seconds the slowest item waited in the queue and ran in the model."""

    outputs: torch.Tensor
    path: str
    queue_s: float
    inference_s: float

    def timings(self, start: float) -> Timings:
        """The answer's timings for a request that arrived at ``start`` (``perf_counter``)."""
        return timings(self.queue_s, self.inference_s, start)


class ModelHandler(ABC, Generic[Inputs]):
    """The request handling of one model kind (module docstring)."""

    kind: ClassVar[str]
    """The ``ModelEntry.kind`` it serves."""
    v2_input: ClassVar[str]
    """The name of the one Open Inference Protocol input."""
    smaller: ClassVar[str]
    """What to send instead of an input over a cost limit (the default advice)."""

    def choose(
        self,
        entry: ModelEntry,
        requested: str,
        size: Size,
        deadline: Deadline,
        settings: Settings,
        *,
        status: int,
        field: str,
        smaller: str | None = None,
    ) -> str:
        """The path to run ``size`` on for the ``requested`` one (auto resolved within the cost
        limits, :mod:`app.serving.cost_limits`): 413 over a limit, naming what fits and
        ``smaller`` (default :attr:`smaller`); an unusable path is an ApiError with ``status``
        naming the request ``field``."""
        try:
            return cost_limits.choose_path(
                entry,
                requested,
                size,
                remaining_s=deadline.left(),
                max_tokens=settings.max_tokens,
                smaller=self.smaller if smaller is None else smaller,
            )
        except ValueError as exc:
            raise ApiError(status, f"{field}: {exc}") from None

    @abstractmethod
    async def decode_v2(
        self, tensor: DecodedTensor, runtime: Runtime, settings: Settings
    ) -> Decoded[Inputs]:
        """The model inputs of an OIP input tensor (:class:`app.api.tensor_inputs.InvalidTensor`
        when it does not fit the model)."""

    @abstractmethod
    async def _run(
        self, runtime: Runtime, inputs: Inputs, size: Size, path: str, deadline: Deadline
    ) -> Outcome:
        """The model's outputs ``[B,C]`` for ``inputs`` on ``path``."""

    async def predict(
        self,
        request: Request,
        runtime: Runtime,
        decoded: Decoded[Inputs],
        path: str,
        deadline: Deadline,
    ) -> Predicted:
        """Run ``decoded`` on ``path``, given up when the client disconnects; 422 for outputs
        that are not finite."""
        outcome = await unless_disconnected(
            request, self._run(runtime, decoded.inputs, decoded.size, path, deadline)
        )
        outputs = finite_outputs(outcome.outputs, runtime.entry.name)
        return Predicted(outputs, path, outcome.queue_s, outcome.inference_s)

    @abstractmethod
    def v2_input_metadata(self, entry: ModelEntry) -> TensorMetadata:
        """The OIP metadata of the model's input (-1 marks variable dimensions)."""

    @staticmethod
    def v2_outputs(entry: ModelEntry) -> list[str]:
        """The OIP output names of the model, by its task."""
        if task(entry) == "regression":
            return ["values"]
        return ["probabilities", "logits"]

    @staticmethod
    def encode_v2(outputs: torch.Tensor, names: list[str]) -> list[ResponseOutput]:
        """The OIP output tensors ``names`` of finite outputs ``[B,C]``, FP32."""
        tensors = {"probabilities": outputs.softmax(-1), "logits": outputs, "values": outputs}
        return [
            ResponseOutput(
                name=n,
                shape=list(tensors[n].shape),
                datatype="FP32",
                data=tensors[n].flatten().tolist(),
            )
            for n in names
        ]
