"""Molecule payloads → model inputs: predict-request graphs (``/v1``) and Open Inference
Protocol SMILES tensors (``/v2``).

``/v1/.../predict`` graphs become :class:`MolGraph` through
:mod:`models.molecule_features`; its ValueErrors become :class:`InvalidGraph` (HTTP 422)
whose message starts with the field path, e.g. ``graphs[2].smiles: invalid SMILES 'C1CC'``.
``/v2/.../infer`` graph models take a ``BYTES`` tensor of SMILES strings, shape ``[B]`` or
``[B,1]`` (already checked by :class:`app.api.schemas.v2.RequestInput` and decoded by
:mod:`app.api.body_decoding`); a bad one raises :class:`app.api.tensor_inputs.InvalidTensor`
(HTTP 400) naming it.

Molecules are checked against :class:`app.api.schemas.v1.MoleculeLimits` with cheap, linear work
(SMILES length; RDKit parsing without sanitization; atom, hydrogen and bond counts) before
anything superlinear (sanitization, canonical ranking) runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.api.body_decoding import DecodedTensor
from app.api.schemas.v1 import GraphInput, LimitExceeded, MoleculeLimits, PredictRequest
from app.api.tensor_inputs import InvalidTensor, batch_size
from app.core.errors import ApiError
from app.core.settings import Settings
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

SMILES_DATATYPE = "BYTES"
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
    batch_size(tensor, max_batch)
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
