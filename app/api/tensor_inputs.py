"""What every Open Inference Protocol input tensor is checked for before its kind's decoding
(:mod:`app.api.image_inputs`, :mod:`app.api.molecules`): the errors such tensors raise and the
batch size."""

from __future__ import annotations

from app.api.body_decoding import DecodedTensor
from app.core.errors import ApiError


class InvalidTensor(ApiError, ValueError):
    """An inference-protocol input tensor does not fit the model (HTTP 400)."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, message)


class InvalidTensorValue(InvalidTensor):
    """An input tensor's values are outside what the model takes (HTTP 422)."""

    status_code = 422


def batch_size(tensor: DecodedTensor, max_batch: int | None) -> int:
    """The tensor's batch B (its first dimension): :class:`InvalidTensor` when it is empty or
    more than ``max_batch``."""
    batch = tensor.shape[0] if tensor.shape else 0
    if batch == 0:
        raise InvalidTensor(f"input {tensor.name!r}: the batch is empty (shape {tensor.shape})")
    if max_batch is not None and batch > max_batch:
        raise InvalidTensor(
            f"input {tensor.name!r}: batch of {batch} exceeds the limit of {max_batch}"
        )
    return batch
