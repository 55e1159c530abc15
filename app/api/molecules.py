"""Request payloads → model inputs: predict-request graphs and Open Inference Protocol tensors.

``/v1/.../predict`` graphs become :class:`MolGraph` through
:mod:`models.molecule_features`; its ValueErrors become :class:`InvalidGraph` (HTTP 422)
whose message starts with the field path, e.g. ``graphs[2].smiles: invalid SMILES 'C1CC'``.

``/v2/.../infer`` inputs (already checked by :class:`app.api.schemas.v2.RequestInput` and
decoded to numpy by :mod:`app.api.body_decoding`) become model inputs here too, raising
:class:`InvalidTensor` (HTTP 400) or :class:`InvalidTensorValue` (HTTP 422):

- graph models take a ``BYTES`` tensor of SMILES strings, shape ``[B]`` or ``[B,1]``;
- image models take pixel values, layout ``[B,C,H,W]`` (NCHW) or ``[B,H,W,C]`` (NHWC),
  told apart by which axis has the model's C channels (NCHW when both do). ``UINT8`` tensors
  are raw 0..255 pixels and get the checkpoint's preprocessing (grayscale conversion as
  Pillow does it, rescale, mean / std); ``FP32`` tensors are taken as finished model input
  and passed unchanged, once their values are within the model's input range (the
  checkpoint's ``value_range``, else what its preprocessing makes of 0..255 pixels). Nothing is
  resized: H and W must be multiples of the patch size.

Molecules are checked against :class:`app.api.schemas.v1.MoleculeLimits` with cheap, linear work
(SMILES length; RDKit parsing without sanitization; atom, hydrogen and bond counts) before
anything superlinear (sanitization, canonical ranking) runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from app.api.body_decoding import DecodedTensor
from app.api.schemas.v1 import GraphInput, LimitExceeded, MoleculeLimits, PredictRequest
from app.core.errors import ApiError
from app.core.settings import Settings
from app.serving.images import ImageSpec, ImageTooLarge
from models.molecule_features import (
    MolGraph,
    MolSize,
    build_mol,
    built_mol_graph,
    mol_size,
    parse_smiles,
    smiles_mol_graph,
)

if TYPE_CHECKING:
    from rdkit import Chem

IMAGE_DATATYPES = ("FP32", "UINT8")
SMILES_DATATYPE = "BYTES"
INPUT_RANGE_SLACK = 1e-3
"""FP32 image values may leave the model's input range by this fraction of its width
(rounding in the client's preprocessing)."""
INLINE_MOLECULE_WORK = 512
"""Requests whose molecules add up to more graph nodes plus bonds than this are featurized in
a decoder process (:mod:`app.serving.decoder_pool`): sanitizing (ring perception) and ranking hold
the GIL for up to seconds per molecule (large ring systems), which a worker thread would not hide
from the event loop; up to this work one RDKit call takes some 30 ms at most."""
_GRAPH_FIELDS = ("atoms[", "bonds[", "atoms:", "bonds:", "atoms/bonds:")


class InvalidGraph(ApiError, ValueError):
    """A request graph cannot be featurized or is too large (HTTP 422)."""

    status_code = 422

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, message)


class InvalidTensor(ApiError, ValueError):
    """An inference-protocol input tensor does not fit the model (HTTP 400)."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, message)


class InvalidTensorValue(InvalidTensor):
    """An input tensor's values are outside what the model takes (HTTP 422)."""

    status_code = 422


def molecule_limits(settings: Settings) -> MoleculeLimits:
    """The molecule limits ``settings`` set (``PLSTM_MAX_GRAPHS_PER_REQUEST``,
    ``PLSTM_MAX_ATOMS``, ``PLSTM_MAX_SMILES_CHARS``)."""
    return MoleculeLimits.derived(
        settings.max_graphs_per_request, settings.max_atoms, settings.max_smiles_chars
    )


def _check_counts(mol: Chem.Mol, where: str, limits: MoleculeLimits) -> MolSize:
    """Limits on an unsanitized RDKit molecule, cheapest count first (RDKit's own counters,
    then one pass over at most ``max_atoms_with_hydrogens`` atoms); returns its size."""
    problems = (
        limits.heavy_atoms_problem(mol.GetNumHeavyAtoms()),
        limits.atoms_problem(mol.GetNumAtoms()),
        limits.bonds_problem(mol.GetNumBonds()),
    )
    for problem in problems:
        if problem is not None:
            raise InvalidGraph(f"{where}: {problem}")
    size = mol_size(mol)
    problems = (
        limits.heavy_atoms_problem(size.heavy_atoms),
        limits.atoms_problem(size.atoms),
        limits.nodes_problem(size.nodes),
    )
    for problem in problems:
        if problem is not None:
            raise InvalidGraph(f"{where}: {problem}")
    return size


def _graph_error(where: str, exc: ValueError) -> InvalidGraph:
    message = str(exc)
    if message.startswith(_GRAPH_FIELDS):
        return InvalidGraph(f"{where}.{message}")
    return InvalidGraph(f"{where}.atoms: {message}")


def _parsed(graph: GraphInput, where: str, limits: MoleculeLimits) -> tuple[Chem.Mol, MolSize]:
    """The graph's unsanitized molecule and size, every limit checked (linear work)."""
    if graph.smiles is not None:
        field = f"{where}.smiles"
        problem = limits.smiles_problem(len(graph.smiles))
        if problem is not None:
            raise InvalidGraph(f"{field}: {problem}")
        try:
            mol = parse_smiles(graph.smiles)
        except ValueError as exc:
            raise InvalidGraph(f"{field}: {str(exc).removeprefix('smiles: ')}") from None
        return mol, _check_counts(mol, field, limits)
    try:
        mol = build_mol(graph.atom_payload(), list(graph.bonds or []))
    except ValueError as exc:
        raise _graph_error(where, exc) from None
    return mol, _check_counts(mol, f"{where}.atoms", limits)


def featurize_input(
    graph: GraphInput, where: str, limits: MoleculeLimits | None = None
) -> MolGraph:
    """One validated request graph → :class:`MolGraph`; ``where`` (e.g. ``graphs[2]``) starts
    every :class:`InvalidGraph` message. ``limits`` are checked before the expensive steps
    (sanitizing, canonical ranking): SMILES length, then atom and bond counts of the parsed or
    built molecule, hydrogens included. None: no limits."""
    limits = limits or MoleculeLimits()
    mol, _ = _parsed(graph, where, limits)
    if graph.smiles is not None:
        try:
            return smiles_mol_graph(mol, graph.smiles)
        except ValueError as exc:
            raise InvalidGraph(f"{where}.smiles: {exc}") from None
    try:
        return built_mol_graph(mol)
    except ValueError as exc:
        raise _graph_error(where, exc) from None


def _request_limits(request: PredictRequest, limits: MoleculeLimits) -> None:
    try:
        request.check_limits(limits)
    except LimitExceeded as exc:
        raise InvalidGraph(exc.message) from None


def check_request(request: PredictRequest, limits: MoleculeLimits) -> int:
    """Every limit of a predict request, checked with linear work only (molecules parsed or
    built and counted, nothing sanitized or ranked). Raises :class:`InvalidGraph`; returns the
    request's work, its molecules' graph nodes plus bonds (:data:`INLINE_MOLECULE_WORK`)."""
    _request_limits(request, limits)
    sizes = [_parsed(graph, f"graphs[{g}]", limits)[1] for g, graph in enumerate(request.graphs)]
    return sum(size.nodes + size.bonds for size in sizes)


def graphs_from_request(request: PredictRequest, limits: MoleculeLimits) -> list[MolGraph]:
    """Every graph of a predict request, in order. Raises :class:`InvalidGraph` for the
    first bad graph or exceeded limit (``graphs[i]...`` in the message)."""
    _request_limits(request, limits)
    return [
        featurize_input(graph, f"graphs[{g}]", limits) for g, graph in enumerate(request.graphs)
    ]


def _batch_size(tensor: DecodedTensor, max_batch: int | None) -> int:
    batch = tensor.shape[0] if tensor.shape else 0
    if batch == 0:
        raise InvalidTensor(f"input {tensor.name!r}: the batch is empty (shape {tensor.shape})")
    if max_batch is not None and batch > max_batch:
        raise InvalidTensor(
            f"input {tensor.name!r}: batch of {batch} exceeds the limit of {max_batch}"
        )
    return batch


def smiles_from_tensor(tensor: DecodedTensor, *, max_batch: int | None = None) -> list[str]:
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
    return list(tensor.values)


def _tensor_graphs(tensor: DecodedTensor, max_batch: int | None) -> list[GraphInput]:
    return [GraphInput(smiles=s) for s in smiles_from_tensor(tensor, max_batch=max_batch)]


def _tensor_error(tensor: DecodedTensor, i: int, exc: InvalidGraph) -> InvalidTensor:
    """``smiles[3]: ...`` rather than the predict request's ``smiles[3].smiles: ...``."""
    field = f"{tensor.name}[{i}]"
    return InvalidTensor(exc.message.replace(f"{field}.smiles", field, 1))


def check_tensor_smiles(
    tensor: DecodedTensor, *, max_batch: int | None = None, limits: MoleculeLimits | None = None
) -> int:
    """:func:`check_request` for a ``BYTES`` SMILES tensor: every limit checked with linear
    work (:class:`InvalidTensor`); returns the graph nodes plus bonds of all its molecules."""
    limits = limits or MoleculeLimits()
    work = 0
    for i, graph in enumerate(_tensor_graphs(tensor, max_batch)):
        try:
            size = _parsed(graph, f"{tensor.name}[{i}]", limits)[1]
        except InvalidGraph as exc:
            raise _tensor_error(tensor, i, exc) from None
        work += size.nodes + size.bonds
    return work


def graphs_from_tensor(
    tensor: DecodedTensor,
    *,
    max_batch: int | None = None,
    limits: MoleculeLimits | None = None,
) -> list[MolGraph]:
    """A ``BYTES`` SMILES tensor → one :class:`MolGraph` per string; a bad string or one over
    a limit raises :class:`InvalidTensor` naming it, e.g. ``smiles[3]: invalid SMILES
    'C1CC'``."""
    graphs = []
    for i, graph in enumerate(_tensor_graphs(tensor, max_batch)):
        try:
            graphs.append(featurize_input(graph, f"{tensor.name}[{i}]", limits))
        except InvalidGraph as exc:
            raise _tensor_error(tensor, i, exc) from None
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


def _check_range(values: np.ndarray, spec: ImageSpec, name: str) -> None:
    """FP32 model input must lie in the range the checkpoint declares (or its preprocessing
    produces): values far outside it only give the model NaN."""
    low, high = spec.input_range()
    slack = INPUT_RANGE_SLACK * (high - low)
    outside = (values < low - slack) | (values > high + slack)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InvalidTensorValue(
            f"input {name!r}: data[{i}] = {values[i]:.7g} is outside the model's input range "
            f"[{low:.7g}, {high:.7g}]"
        )


def images_from_tensor(
    tensor: DecodedTensor,
    spec: ImageSpec,
    *,
    max_batch: int | None = None,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """An ``FP32`` / ``UINT8`` pixel tensor (module docstring) → model input
    ``[B,C,H,W]`` float32. Raises :class:`InvalidTensor`, :class:`InvalidTensorValue` (422)
    for FP32 values outside :meth:`ImageSpec.input_range`, or
    :class:`app.serving.images.ImageTooLarge` (413) when H·W exceeds ``max_pixels``."""
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
    if tensor.datatype == "FP32":
        _check_range(np.asarray(tensor.values), spec, tensor.name)
    dtype = torch.float32 if tensor.datatype == "FP32" else torch.int64
    values = torch.from_numpy(np.asarray(tensor.values)).to(dtype).reshape(tensor.shape)
    if layout == "NHWC":
        values = values.permute(0, 3, 1, 2)
    if tensor.datatype == "FP32":
        return values.contiguous()
    if spec.grayscale:
        values = _luminance(values).expand(b, spec.channels, h, w)
    return spec.normalize(values).contiguous()
