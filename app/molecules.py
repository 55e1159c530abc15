"""Request payloads → model inputs: predict-request graphs and Open Inference Protocol tensors.

``/v1/.../predict`` graphs become :class:`MolGraph` through
:mod:`models.molecule_features`; its ValueErrors become :class:`InvalidGraph` (HTTP 422)
whose message starts with the field path, e.g. ``graphs[2].smiles: invalid SMILES 'C1CC'``.

``/v2/.../infer`` inputs (already checked by :class:`app.schemas.RequestInput`) are decoded
here too, raising :class:`InvalidTensor` (HTTP 400):

- graph models take a ``BYTES`` tensor of SMILES strings, shape ``[B]`` or ``[B,1]``;
- image models take pixel values, layout ``[B,C,H,W]`` (NCHW) or ``[B,H,W,C]`` (NHWC),
  told apart by which axis has the model's C channels (NCHW when both do). ``UINT8`` tensors
  are raw 0..255 pixels and get the checkpoint's preprocessing (grayscale conversion as
  Pillow does it, rescale, mean / std); ``FP32`` tensors are taken as finished model input
  and passed unchanged. Nothing is resized: H and W must be multiples of the patch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from app.images import ImageSpec, ImageTooLarge
from app.schemas import GraphInput, LimitExceeded, PredictRequest, RequestInput
from models.molecule_features import MolGraph, featurize_graph, featurize_smiles

IMAGE_DATATYPES = ("FP32", "UINT8")
SMILES_DATATYPE = "BYTES"
_GRAPH_FIELDS = ("atoms[", "bonds[", "atoms:", "bonds:", "atoms/bonds:")


class InvalidGraph(ValueError):
    """A request graph cannot be featurized or is too large (HTTP 422)."""

    status_code = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidTensor(ValueError):
    """An inference-protocol input tensor does not fit the model (HTTP 400)."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _check_size(graph: MolGraph, where: str, max_atoms: int | None) -> MolGraph:
    if max_atoms is not None and graph.num_nodes > max_atoms:
        raise InvalidGraph(
            f"{where}: {graph.num_nodes} heavy atoms exceed the limit of {max_atoms} per graph"
        )
    return graph


def _featurize_smiles(smiles: str, field: str, max_atoms: int | None) -> MolGraph:
    try:
        graph = featurize_smiles(smiles)
    except ValueError as exc:
        raise InvalidGraph(f"{field}: {str(exc).removeprefix('smiles: ')}") from None
    return _check_size(graph, field, max_atoms)


def featurize_input(graph: GraphInput, where: str, *, max_atoms: int | None = None) -> MolGraph:
    """One validated request graph → :class:`MolGraph`; ``where`` (e.g. ``graphs[2]``) starts
    every :class:`InvalidGraph` message. ``max_atoms`` limits heavy atoms (None: no limit)."""
    if graph.smiles is not None:
        return _featurize_smiles(graph.smiles, f"{where}.smiles", max_atoms)
    heavy = graph.heavy_atom_count() or 0
    if max_atoms is not None and heavy > max_atoms:
        raise InvalidGraph(
            f"{where}.atoms: {heavy} heavy atoms exceed the limit of {max_atoms} per graph"
        )
    try:
        result = featurize_graph(graph.atom_payload(), list(graph.bonds or []))
    except ValueError as exc:
        message = str(exc)
        if message.startswith(_GRAPH_FIELDS):
            raise InvalidGraph(f"{where}.{message}") from None
        raise InvalidGraph(f"{where}.atoms: {message}") from None
    return _check_size(result, f"{where}.atoms", max_atoms)


def graphs_from_request(
    request: PredictRequest,
    *,
    max_graphs: int | None = None,
    max_atoms: int | None = None,
) -> list[MolGraph]:
    """Every graph of a predict request, in order. Raises :class:`InvalidGraph` for the
    first bad graph or exceeded limit (``graphs[i]...`` in the message)."""
    try:
        request.check_limits(max_graphs=max_graphs, max_atoms=max_atoms)
    except LimitExceeded as exc:
        raise InvalidGraph(exc.message) from None
    return [
        featurize_input(graph, f"graphs[{g}]", max_atoms=max_atoms)
        for g, graph in enumerate(request.graphs)
    ]


def _batch_size(tensor: RequestInput, max_batch: int | None) -> int:
    batch = tensor.shape[0] if tensor.shape else 0
    if batch == 0:
        raise InvalidTensor(f"input {tensor.name!r}: the batch is empty (shape {tensor.shape})")
    if max_batch is not None and batch > max_batch:
        raise InvalidTensor(
            f"input {tensor.name!r}: batch of {batch} exceeds the limit of {max_batch}"
        )
    return batch


def smiles_from_tensor(tensor: RequestInput, *, max_batch: int | None = None) -> list[str]:
    """A ``BYTES`` tensor of shape ``[B]`` or ``[B,1]`` → B SMILES strings."""
    if tensor.datatype != SMILES_DATATYPE:
        raise InvalidTensor(
            f"input {tensor.name!r}: datatype {tensor.datatype} given, graph models take "
            f"{SMILES_DATATYPE} (SMILES strings)"
        )
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidTensor(
            f"input {tensor.name!r}: shape {tensor.shape} given, expected [B] or [B, 1]"
        )
    _batch_size(tensor, max_batch)
    return list(tensor.flat_data())


def graphs_from_tensor(
    tensor: RequestInput,
    *,
    max_batch: int | None = None,
    max_atoms: int | None = None,
) -> list[MolGraph]:
    """A ``BYTES`` SMILES tensor → one :class:`MolGraph` per string; a bad string raises
    :class:`InvalidTensor` naming it, e.g. ``smiles[3]: invalid SMILES 'C1CC'``."""
    graphs = []
    for i, smiles in enumerate(smiles_from_tensor(tensor, max_batch=max_batch)):
        try:
            graphs.append(_featurize_smiles(smiles, f"{tensor.name}[{i}]", max_atoms))
        except InvalidGraph as exc:
            raise InvalidTensor(exc.message) from None
    return graphs


def _luminance(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-valued ``[B,3,H,W]`` → ``[B,1,H,W]`` with Pillow's integer RGB→L formula."""
    r, g, b = pixels.to(torch.int64).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def _layout(shape: Sequence[int], channels: int, name: str) -> str:
    if len(shape) != 4:
        raise InvalidTensor(
            f"input {name!r}: shape {list(shape)} given, expected [B,{channels},H,W] (NCHW) "
            f"or [B,H,W,{channels}] (NHWC)"
        )
    if shape[1] == channels:
        return "NCHW"
    if shape[3] == channels:
        return "NHWC"
    raise InvalidTensor(
        f"input {name!r}: shape {list(shape)} has no axis of {channels} channels "
        f"(expected [B,{channels},H,W] or [B,H,W,{channels}])"
    )


def images_from_tensor(
    tensor: RequestInput,
    spec: ImageSpec,
    *,
    max_batch: int | None = None,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """An ``FP32`` / ``UINT8`` pixel tensor (module docstring) → model input
    ``[B,C,H,W]`` float32. Raises :class:`InvalidTensor`, or :class:`app.images.ImageTooLarge`
    (413) when H·W exceeds ``max_pixels``."""
    if tensor.datatype not in IMAGE_DATATYPES:
        raise InvalidTensor(
            f"input {tensor.name!r}: datatype {tensor.datatype} given, image models take "
            f"{' or '.join(IMAGE_DATATYPES)}"
        )
    input_channels = 3 if tensor.datatype == "UINT8" and spec.grayscale else spec.channels
    layout = _layout(tensor.shape, input_channels, tensor.name)
    _batch_size(tensor, max_batch)
    b = tensor.shape[0]
    h, w = (tensor.shape[2], tensor.shape[3]) if layout == "NCHW" else tensor.shape[1:3]
    p = spec.patch_size
    if max_pixels is not None and h * w > max_pixels:
        raise ImageTooLarge(
            f"input {tensor.name!r}: {w}x{h} = {w * h} pixels per image exceed the limit of "
            f"{max_pixels}"
        )
    if h < p or w < p or h % p or w % p:
        raise InvalidTensor(
            f"input {tensor.name!r}: images are {h}x{w} (HxW); both sides must be positive "
            f"multiples of the patch size {p}"
        )
    dtype = torch.float32 if tensor.datatype == "FP32" else torch.int64
    values = torch.tensor(tensor.flat_data(), dtype=dtype).reshape(tensor.shape)
    if layout == "NHWC":
        values = values.permute(0, 3, 1, 2)
    if tensor.datatype == "FP32":
        return values.contiguous()
    if spec.grayscale:
        values = _luminance(values).expand(b, spec.channels, h, w)
    return spec.normalize(values).contiguous()
