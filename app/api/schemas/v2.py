"""Bodies of the Open Inference Protocol v2 (``/v2``, KServe / Triton REST, JSON tensors only):
health, server and model metadata, inference requests and responses; tensors are checked by
:func:`app.api.schemas.tensors.check_tensor`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.api.schemas.common import UnavailableReason, _example, _Schema
from app.api.schemas.tensors import (
    DATATYPES,
    Datatype,
    TensorValueError,
    TensorValues,
    check_tensor,
)


class Liveness(_Schema):
    """``GET /v2/health/live``."""

    model_config = _example(live=True)
    live: bool = Field(description="Always true: the server answers.")


class Readiness(_Schema):
    """``GET /v2/health/ready`` when ready (else 503 with an error)."""

    model_config = _example(ready=True)
    ready: bool = Field(description="Always true: the server takes inference requests.")


NonNegative = Annotated[int, Field(ge=0)]


Dimension = Annotated[int, Field(ge=-1)]


class ServerMetadata(_Schema):
    """``GET /v2``."""

    model_config = _example(name="plstm", version="0.1.0", extensions=["model_repository"])
    name: str = Field(description="Server name.")
    version: str = Field(description="Server version.")
    extensions: list[str] = Field(description="Supported protocol extensions.")


class TensorMetadata(_Schema):
    """One input or output of a model."""

    model_config = _example(name="images", datatype="FP32", shape=[-1, 3, -1, -1])
    name: str = Field(min_length=1, description="Tensor name.")
    datatype: Datatype = Field(description="Element type (OIP v2 datatype).")
    shape: list[Dimension] = Field(description="Shape; -1 marks a variable dimension.")


class ModelMetadata(_Schema):
    """``GET /v2/models/{name}[/versions/{version}]``."""

    model_config = _example(
        name="arrow-plstm",
        versions=["1"],
        platform="pytorch",
        inputs=[{"name": "images", "datatype": "FP32", "shape": [-1, 3, -1, -1]}],
        outputs=[{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
    )
    name: str = Field(description="Model name.")
    versions: list[str] = Field(description="Available versions.")
    platform: str = Field(description="Framework the model runs on.")
    inputs: list[TensorMetadata] = Field(description="Input tensors the model accepts.")
    outputs: list[TensorMetadata] = Field(description="Output tensors the model produces.")


class ModelReady(_Schema):
    """``GET /v2/models/{name}[/versions/{version}]/ready`` body (status 200 or 503)."""

    model_config = _example(name="arrow-plstm", ready=True)
    name: str = Field(description="Model name.")
    ready: bool = Field(description="Whether the model accepts inference requests.")
    reason: UnavailableReason | None = Field(
        default=None,
        description="Only for a version that cannot serve until the server restarts: why.",
    )


TENSOR_VALUE_ERROR = "tensor_value"
"""Pydantic error type of an input element that is not finite or out of range."""


class RequestInput(_Schema):
    """One input tensor of an inference request (JSON data, row-major)."""

    model_config = _example(
        name="smiles", shape=[2], datatype="BYTES", data=["CCO", "c1ccccc1"], parameters=None
    )
    name: str = Field(min_length=1, description="Input name from the model metadata.")
    shape: list[NonNegative] = Field(description="Tensor shape.")
    datatype: str = Field(
        description="Element type: BOOL, UINT8..INT64, FP16..FP64, BYTES.",
        json_schema_extra={"enum": list(DATATYPES)},
    )
    data: list[Any] = Field(description="Elements, flat or nested, in row-major order.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")
    _values: TensorValues = PrivateAttr()

    @model_validator(mode="after")
    def _consistent(self) -> RequestInput:
        name = f"input {self.name!r}"
        try:
            self._values = check_tensor(name, self.shape, self.datatype, self.data)
        except TensorValueError as exc:
            problem = {"problem": str(exc)}
            raise PydanticCustomError(TENSOR_VALUE_ERROR, "{problem}", problem) from None
        return self

    @property
    def values(self) -> TensorValues:
        """The elements, flat row-major, as :func:`check_tensor` returns them."""
        return self._values


class RequestOutput(_Schema):
    """One requested output."""

    model_config = _example(name="probabilities", parameters={"binary_data": False})
    name: str = Field(min_length=1, description="Output name from the model metadata.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")


def _unique(names: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: name {name!r} given twice")
        seen.add(name)


class InferenceRequest(_Schema):
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""

    model_config = _example(
        id="42",
        inputs=[{"name": "smiles", "shape": [1], "datatype": "BYTES", "data": ["CCO"]}],
        outputs=[{"name": "probabilities"}],
    )
    id: str | None = Field(default=None, description="Request id, echoed in the response.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")
    inputs: list[RequestInput] = Field(min_length=1, description="Input tensors.")
    outputs: list[RequestOutput] | None = Field(
        default=None, description="Outputs to return; omitted: all of them."
    )

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, inputs: list[RequestInput]) -> list[RequestInput]:
        _unique((i.name for i in inputs), "inputs")
        return inputs

    @field_validator("outputs")
    @classmethod
    def _unique_outputs(cls, outputs: list[RequestOutput] | None) -> list[RequestOutput] | None:
        _unique((o.name for o in outputs or []), "outputs")
        return outputs


class ResponseOutput(_Schema):
    """One output tensor of an inference response."""

    model_config = _example(
        name="probabilities", shape=[1, 2], datatype="FP32", data=[0.1, 0.9], parameters=None
    )
    name: str = Field(min_length=1, description="Output name.")
    shape: list[NonNegative] = Field(description="Tensor shape.")
    datatype: Datatype = Field(description="Element type (OIP v2 datatype).")
    data: list[Any] = Field(description="Elements as a flat row-major list.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")

    @model_validator(mode="after")
    def _consistent(self) -> ResponseOutput:
        check_tensor(f"output {self.name!r}", self.shape, self.datatype, self.data)
        return self


class InferenceResponse(_Schema):
    """``POST /v2/models/{name}[/versions/{version}]/infer`` answer."""

    model_config = _example(
        model_name="solubility-plstm",
        model_version="1",
        id="42",
        outputs=[
            {"name": "probabilities", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.7]}
        ],
    )
    model_name: str = Field(description="Model name.")
    model_version: str | None = Field(default=None, description="Model version that answered.")
    id: str | None = Field(default=None, description="The request id, if one was given.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")
    outputs: list[ResponseOutput] = Field(description="Output tensors.")
