"""JSON request bodies → validated requests, the cheap limits first.

Every function takes the raw body bytes and either returns a compact, validated result or
raises :class:`BodyError` (an HTTP status and message). They import no torch and no RDKit, so
the decoder processes of :mod:`app.serving.decoder_pool` that run them for large bodies start fast;
small bodies are decoded in the server process itself.

Order of the checks: the nesting depth of arrays and objects (:func:`json_nesting_depth`, a
linear scan of the bytes, so a body nested 10,000 levels deep never reaches the recursive
parser), JSON syntax, then the schema, whose list lengths (graphs, atoms, bonds) are checked
before the items they hold are validated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from app.api.schemas.common import validation_error_message
from app.api.schemas.tensors import TensorValues
from app.api.schemas.v2 import TENSOR_VALUE_ERROR, InferenceRequest, RequestInput
from app.core.errors import ApiError

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a JSON body (an OIP image tensor sent as
nested lists needs 8)."""

# JSON text outside strings can only hold brackets, commas, colons, numbers and true / false /
# null; inside strings every backslash escape is one of "\/bfnrtu. Keeping the brackets, the
# quotes, the backslash and those escape letters is enough to tell strings apart.
_STRUCTURE = b'[]{}"\\/bfnrtu'
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in _STRUCTURE)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


class BodyError(ApiError, ValueError):
    """A body that cannot be decoded: ``status_code`` is the HTTP answer."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(status_code, message)
        self.args = (status_code, message)

    def __str__(self) -> str:
        return self.message


def json_nesting_depth(body: bytes) -> int:
    """Deepest nesting of arrays / objects in the JSON text ``body``, brackets inside strings
    ignored; in time linear in its length (byte translation, one regular expression over what
    is left, a cumulative sum). Unterminated strings count as structure."""
    structure = _STRING.sub(b"", body.translate(None, _NOT_STRUCTURE))
    brackets = np.frombuffer(structure.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if brackets.size == 0:
        return 0
    return int(np.cumsum(_DEPTH_STEP[brackets], dtype=np.int32).max())


def load_json(body: bytes, *, invalid_status: int = 400, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON document of ``body``: 400 when nested deeper than ``max_depth``,
    ``invalid_status`` when it is not JSON."""
    depth = json_nesting_depth(body)
    if depth > max_depth:
        raise BodyError(
            400,
            f"the body nests arrays/objects {depth} levels deep, more than the limit of "
            f"{max_depth}",
        )
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise BodyError(invalid_status, f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise BodyError(invalid_status, "the body is not valid JSON: not UTF-8 text") from None
    except ValueError:  # an integer literal longer than Python converts
        raise BodyError(
            invalid_status, "the body is not valid JSON: a number has too many digits"
        ) from None


def decode_model(body: bytes, model: type[BaseModel], context: dict[str, Any]) -> BaseModel:
    """``body`` validated as ``model`` with validation ``context`` (limits); invalid JSON and
    schema errors → 422, as FastAPI answers them."""
    document = load_json(body, invalid_status=422)
    try:
        return model.model_validate(document, context=context)
    except ValidationError as exc:
        raise BodyError(422, validation_error_message(exc.errors())) from None


@dataclass(frozen=True)
class DecodedTensor:
    """One input tensor of an inference request: ``values`` flat row-major
    (:data:`app.api.schemas.tensors.TensorValues`)."""

    name: str
    shape: list[int]
    datatype: str
    values: TensorValues

    @classmethod
    def of(cls, tensor: RequestInput) -> DecodedTensor:
        return cls(tensor.name, list(tensor.shape), tensor.datatype, tensor.values)


@dataclass(frozen=True)
class DecodedInferRequest:
    """An inference request with its tensors as numpy arrays; ``outputs``: requested output
    names, None for all."""

    id: str | None
    parameters: dict[str, Any] | None
    inputs: list[DecodedTensor]
    outputs: list[str] | None


def decode_infer_request(body: bytes) -> DecodedInferRequest:
    """An Open Inference Protocol infer body → :class:`DecodedInferRequest`. 400 for bodies
    that are not such a request (JSON, schema, shapes, element types, binary outputs); 422
    when the only problems are element values (not finite, out of the datatype's range)."""
    document = load_json(body)
    try:
        parsed = InferenceRequest.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        values_only = all(e.get("type") == TENSOR_VALUE_ERROR for e in errors)
        raise BodyError(422 if values_only else 400, validation_error_message(errors)) from None
    for out in parsed.outputs or []:
        if (out.parameters or {}).get("binary_data"):
            raise BodyError(400, f"output {out.name!r}: binary_data is not supported")
    return DecodedInferRequest(
        id=parsed.id,
        parameters=parsed.parameters,
        inputs=[DecodedTensor.of(tensor) for tensor in parsed.inputs],
        outputs=None if parsed.outputs is None else [o.name for o in parsed.outputs],
    )
