"""Molecules → canonical DAGs with node / edge features (DESIGN.md section 6).

A molecule arrives as SMILES (:func:`featurize_smiles`), as an explicit atom / bond list
(:func:`featurize_graph`) or as an RDKit molecule (:func:`featurize_mol`). All three sanitize
with RDKit, drop hydrogen atoms into their heavy atom's H count (``Chem.RemoveHs``) and build
the same :class:`MolGraph`:

- nodes are the heavy atoms, RE-ORDERED by their RDKit canonical rank
  (``Chem.CanonicalRankAtoms(mol, breakTies=True, includeChirality=False,
  includeIsotopes=False, includeAtomMaps=False)``): node n is the atom of rank n. Chirality,
  isotopes and atom maps are not features, so they do not take part in the ranking either;
- every bond becomes one directed edge from the lower-rank to the higher-rank atom, edges
  sorted by (source, target).

Hence the tensors depend only on the molecule, not on the order in which its atoms were
listed, and any model on them gives order-independent predictions.

Atom features (``NUM_NODE_FEATURES`` = 38, one-hots clamp out-of-range values to the last
bucket): element (``ELEMENTS`` + "other"), degree 0..5, formal charge −2..+2, aromatic,
total H count 0..4, hybridisation (SP, SP2, SP3, SP3D, SP3D2, other), in ring.
Bond features (``NUM_EDGE_FEATURES`` = 7): type (single, double, triple, aromatic, other),
conjugated, in ring.

Sanitizing (ring perception) and canonical ranking cost more than linear time, so callers that
take molecules from untrusted input split the work: :func:`parse_smiles` / :func:`build_mol`
give an unsanitized molecule in linear time, :func:`mol_size` counts its atoms (hydrogens
included) and bonds, and only then :func:`smiles_mol_graph` / :func:`built_mol_graph` sanitize,
rank and featurize it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rdkit import Chem, rdBase

ELEMENTS = ("H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Br", "I", "Se")
MAX_DEGREE = 5
CHARGES = (-2, -1, 0, 1, 2)
MAX_HYDROGENS = 4
HYBRIDIZATIONS = (
    Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2,
    Chem.HybridizationType.SP3,
    Chem.HybridizationType.SP3D,
    Chem.HybridizationType.SP3D2,
)
BOND_TYPES = (
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
)

NUM_NODE_FEATURES = (
    (len(ELEMENTS) + 1)
    + (MAX_DEGREE + 1)
    + len(CHARGES)
    + 1
    + (MAX_HYDROGENS + 1)
    + (len(HYBRIDIZATIONS) + 1)
    + 1
)
NUM_EDGE_FEATURES = (len(BOND_TYPES) + 1) + 2

MAX_ABS_CHARGE = 8
"""Largest formal charge (either sign) an explicit atom may carry."""
MAX_ATOM_HYDROGENS = 8
"""Largest ``hydrogens`` count an explicit atom may carry."""

_BOND_ORDERS = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
_ATOM_KEYS = ("aromatic", "charge", "element", "hydrogens")
_PERIODIC = Chem.GetPeriodicTable()
_SYMBOLS = frozenset(_PERIODIC.GetElementSymbol(z) for z in range(1, 119))


@dataclass(frozen=True, eq=False)
class MolGraph:
    """One graph as a DAG: x ``[N,F]`` float32, edge_index ``[2,E]`` long (row 0 source,
    row 1 target, every edge from a lower to a higher node index), edge_attr ``[E,Fe]``
    float32 (Fe may be 0)."""

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def num_node_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_edge_features(self) -> int:
        return int(self.edge_attr.shape[1])


def _one_hot(value: Any, choices: Sequence[Any]) -> list[float]:
    """One-hot over ``choices`` plus a final "other" bucket."""
    out = [0.0] * (len(choices) + 1)
    out[choices.index(value) if value in choices else len(choices)] = 1.0
    return out


def _clamped(value: int, high: int) -> list[float]:
    out = [0.0] * (high + 1)
    out[min(max(value, 0), high)] = 1.0
    return out


def atom_features(atom: Chem.Atom) -> list[float]:
    """The ``NUM_NODE_FEATURES`` features of one (sanitized) RDKit atom."""
    charge = min(max(atom.GetFormalCharge(), CHARGES[0]), CHARGES[-1])
    return (
        _one_hot(atom.GetSymbol(), ELEMENTS)
        + _clamped(atom.GetDegree(), MAX_DEGREE)
        + [1.0 if c == charge else 0.0 for c in CHARGES]
        + [float(atom.GetIsAromatic())]
        + _clamped(atom.GetTotalNumHs(), MAX_HYDROGENS)
        + _one_hot(atom.GetHybridization(), HYBRIDIZATIONS)
        + [float(atom.IsInRing())]
    )


def bond_features(bond: Chem.Bond) -> list[float]:
    """The ``NUM_EDGE_FEATURES`` features of one (sanitized) RDKit bond."""
    return [
        *_one_hot(bond.GetBondType(), BOND_TYPES),
        float(bond.GetIsConjugated()),
        float(bond.IsInRing()),
    ]


def canonical_ranks(mol: Chem.Mol) -> list[int]:
    """The canonical rank of every atom of ``mol`` (hydrogens already removed): atom i becomes
    node ``canonical_ranks(mol)[i]`` of its :class:`MolGraph`."""
    return list(
        Chem.CanonicalRankAtoms(
            mol,
            breakTies=True,
            includeChirality=False,
            includeIsotopes=False,
            includeAtomMaps=False,
        )
    )


def _graph_of(mol: Chem.Mol) -> MolGraph:
    """A sanitized molecule without hydrogen atoms → :class:`MolGraph` (canonical order)."""
    if mol.GetNumAtoms() == 0:
        raise ValueError("molecule has no heavy atoms")
    ranks = canonical_ranks(mol)
    order = sorted(range(len(ranks)), key=ranks.__getitem__)  # order[node] = atom index
    x = torch.tensor([atom_features(mol.GetAtomWithIdx(a)) for a in order], dtype=torch.float32)
    edges = []
    for bond in mol.GetBonds():
        a, b = ranks[bond.GetBeginAtomIdx()], ranks[bond.GetEndAtomIdx()]
        edges.append((min(a, b), max(a, b), bond_features(bond)))
    edges.sort(key=lambda e: (e[0], e[1]))
    edge_index = torch.tensor([[e[0] for e in edges], [e[1] for e in edges]], dtype=torch.long)
    edge_attr = torch.tensor([e[2] for e in edges], dtype=torch.float32)
    return MolGraph(
        x=x,
        edge_index=edge_index.reshape(2, len(edges)),
        edge_attr=edge_attr.reshape(len(edges), NUM_EDGE_FEATURES),
    )


def featurize_mol(mol: Chem.Mol) -> MolGraph:
    """A sanitized RDKit molecule → :class:`MolGraph` (hydrogen atoms removed first)."""
    if mol is None or not isinstance(mol, Chem.Mol):
        raise ValueError(f"expected an RDKit molecule, got {type(mol).__name__}")
    with rdBase.BlockLogs():
        mol = Chem.RemoveHs(mol)
    return _graph_of(mol)


def _sanitized_without_hs(mol: Chem.Mol) -> Chem.Mol:
    """Hydrogen atoms folded into their neighbours' H counts, then RDKit sanitization (one
    pass, as RDKit's SMILES parser does it). Raises ValueError with RDKit's reason."""
    try:
        with rdBase.BlockLogs():
            return Chem.RemoveHs(mol, implicitOnly=False, updateExplicitCount=True, sanitize=True)
    except Exception as err:  # RDKit raises several exception types for chemistry errors
        raise ValueError(" ".join(str(err).split())) from None


@dataclass(frozen=True)
class MolSize:
    """What an unsanitized molecule holds: ``heavy_atoms`` (every atom but hydrogen),
    ``hydrogens`` (hydrogen atoms plus the H counts of the other atoms, implicit ones
    included), ``bonds``, and ``nodes``: the atoms its :class:`MolGraph` will have, i.e. the
    heavy atoms and the hydrogen atoms that ``Chem.RemoveHs`` keeps (isotopes such as ``[2H]``,
    unbonded ones)."""

    heavy_atoms: int
    hydrogens: int
    bonds: int
    nodes: int

    @property
    def atoms(self) -> int:
        """Atoms including hydrogens."""
        return self.heavy_atoms + self.hydrogens


def mol_size(mol: Chem.Mol) -> MolSize:
    """Counts of a molecule from :func:`parse_smiles` or :func:`build_mol`, in time linear in
    its atoms (valences only, no ring perception). Implicit hydrogens are those RDKit would add
    to fill each atom's default valence. ``nodes`` is all atoms when RDKit cannot remove the
    hydrogens of this (invalid) molecule."""
    mol.UpdatePropertyCache(strict=False)
    heavy = hydrogens = 0
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() == 1:
            hydrogens += 1
        else:
            heavy += 1
        hydrogens += atom.GetTotalNumHs()
    try:
        with rdBase.BlockLogs():
            nodes = Chem.RemoveHs(mol, implicitOnly=False, sanitize=False).GetNumAtoms()
    except Exception:  # RDKit's errors of invalid molecules, which sanitizing reports later
        nodes = mol.GetNumAtoms()
    return MolSize(heavy_atoms=heavy, hydrogens=hydrogens, bonds=mol.GetNumBonds(), nodes=nodes)


def shown_smiles(smiles: str, limit: int = 60) -> str:
    """``smiles`` quoted for an error message; long strings are cut after ``limit`` chars."""
    if len(smiles) <= limit:
        return repr(smiles)
    return f"{smiles[:limit]!r}... ({len(smiles)} characters)"


def parse_smiles(smiles: str) -> Chem.Mol:
    """SMILES → RDKit molecule, parsed but not sanitized (linear time; hydrogen atoms kept).
    Raises ValueError for anything that is not SMILES syntax."""
    if not isinstance(smiles, str):
        raise ValueError(f"smiles: expected a string, got {type(smiles).__name__}")
    if not smiles.strip():
        raise ValueError("smiles: empty string")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        raise ValueError(f"invalid SMILES {shown_smiles(smiles)}")
    if mol.GetNumAtoms() == 0:
        raise ValueError(f"SMILES {shown_smiles(smiles)} has no atoms")
    return mol


def _sanitized_smiles_mol(mol: Chem.Mol, smiles: str) -> Chem.Mol:
    try:
        return _sanitized_without_hs(mol)
    except ValueError:
        raise ValueError(f"invalid SMILES {shown_smiles(smiles)}") from None


def smiles_mol_graph(mol: Chem.Mol, smiles: str) -> MolGraph:
    """A molecule from :func:`parse_smiles` (of ``smiles``, named in errors) → :class:`MolGraph`:
    hydrogens folded, sanitized, ranked, featurized."""
    return _graph_of(_sanitized_smiles_mol(mol, smiles))


def mol_from_smiles(smiles: str) -> Chem.Mol:
    """SMILES → a sanitized RDKit molecule without hydrogen atoms (atom i is node
    ``canonical_ranks(mol)[i]`` of :func:`featurize_smiles`). ValueError for anything RDKit
    cannot parse."""
    return _sanitized_smiles_mol(parse_smiles(smiles), smiles)


def featurize_smiles(smiles: str) -> MolGraph:
    """SMILES → :class:`MolGraph`. Raises ValueError for anything RDKit cannot parse."""
    return smiles_mol_graph(parse_smiles(smiles), smiles)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_atom(i: int, spec: Any) -> Chem.Atom:
    where = f"atoms[{i}]"
    if isinstance(spec, str):
        spec = {"element": spec}
    if not isinstance(spec, dict):
        raise ValueError(
            f"{where}: expected an element symbol or an object, got {type(spec).__name__}"
        )
    unknown = sorted(str(k) for k in spec if k not in _ATOM_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(_ATOM_KEYS)})")
    element = spec.get("element")
    if not isinstance(element, str) or element not in _SYMBOLS:
        shown = repr(element) if not isinstance(element, str) else shown_smiles(element, 8)
        raise ValueError(f"{where}.element: unknown element {shown}")
    atom = Chem.Atom(element)
    charge = spec.get("charge")
    if charge is not None:
        if not _is_int(charge) or abs(charge) > MAX_ABS_CHARGE:
            raise ValueError(
                f"{where}.charge: expected an integer from {-MAX_ABS_CHARGE} to "
                f"{MAX_ABS_CHARGE}, got {charge!r}"
            )
        atom.SetFormalCharge(charge)
    aromatic = spec.get("aromatic")
    if aromatic is not None:
        if not isinstance(aromatic, bool):
            raise ValueError(f"{where}.aromatic: expected true or false, got {aromatic!r}")
        atom.SetIsAromatic(aromatic)
    hydrogens = spec.get("hydrogens")
    if hydrogens is not None:
        if not _is_int(hydrogens) or not 0 <= hydrogens <= MAX_ATOM_HYDROGENS:
            raise ValueError(
                f"{where}.hydrogens: expected an integer from 0 to {MAX_ATOM_HYDROGENS}, "
                f"got {hydrogens!r}"
            )
        atom.SetNumExplicitHs(hydrogens)
        atom.SetNoImplicit(True)  # the client's count is the whole count
    return atom


def _parse_bond(k: int, spec: Any, num_atoms: int) -> tuple[int, int, Chem.BondType]:
    where = f"bonds[{k}]"
    if not isinstance(spec, list | tuple) or len(spec) != 3:
        raise ValueError(f"{where}: expected [i, j, order], got {spec!r}")
    i, j, order = spec
    for idx in (i, j):
        if not _is_int(idx):
            raise ValueError(f"{where}: atom index must be an integer, got {idx!r}")
        if not 0 <= idx < num_atoms:
            raise ValueError(f"{where}: atom index {idx} out of range ({num_atoms} atoms)")
    if i == j:
        raise ValueError(f"{where}: bond from atom {i} to itself")
    if isinstance(order, bool) or not isinstance(order, int | float):
        raise ValueError(f"{where}: bond order must be one of 1, 2, 3, 1.5, got {order!r}")
    if order == 1.5:
        return i, j, Chem.BondType.AROMATIC
    if order not in _BOND_ORDERS:
        raise ValueError(f"{where}: bond order must be one of 1, 2, 3, 1.5, got {order!r}")
    return i, j, _BOND_ORDERS[int(order)]


def build_mol(atoms: Sequence[Any], bonds: Sequence[Any]) -> Chem.RWMol:
    """Explicit atoms and bonds (as :func:`featurize_graph` takes them) → an unsanitized RDKit
    molecule, in time linear in the lists. Raises ValueError naming the offending field."""
    if not isinstance(atoms, list | tuple):
        raise ValueError(f"atoms: expected a list, got {type(atoms).__name__}")
    if not isinstance(bonds, list | tuple):
        raise ValueError(f"bonds: expected a list, got {type(bonds).__name__}")
    if not atoms:
        raise ValueError("atoms: empty list, a molecule needs at least one atom")
    mol = Chem.RWMol()
    for i, spec in enumerate(atoms):
        mol.AddAtom(_parse_atom(i, spec))
    seen: dict[tuple[int, int], int] = {}
    for k, spec in enumerate(bonds):
        i, j, bond_type = _parse_bond(k, spec, len(atoms))
        key = (min(i, j), max(i, j))
        if key in seen:
            raise ValueError(
                f"bonds[{k}]: duplicate bond between atoms {key[0]} and {key[1]} "
                f"(also bonds[{seen[key]}])"
            )
        seen[key] = k
        mol.AddBond(i, j, bond_type)
        if bond_type == Chem.BondType.AROMATIC:
            mol.GetBondBetweenAtoms(i, j).SetIsAromatic(True)
            mol.GetAtomWithIdx(i).SetIsAromatic(True)
            mol.GetAtomWithIdx(j).SetIsAromatic(True)
    return mol


def _sanitized_built_mol(mol: Chem.Mol) -> Chem.Mol:
    try:
        return _sanitized_without_hs(mol)
    except ValueError as err:
        raise ValueError(f"atoms/bonds: not a valid molecule ({err})") from None


def built_mol_graph(mol: Chem.Mol) -> MolGraph:
    """A molecule from :func:`build_mol` → :class:`MolGraph`: hydrogens folded, sanitized,
    ranked, featurized."""
    return _graph_of(_sanitized_built_mol(mol))


def mol_from_graph(atoms: Sequence[Any], bonds: Sequence[Any]) -> Chem.Mol:
    """Explicit atoms and bonds (as :func:`featurize_graph` takes them) → a sanitized RDKit
    molecule without hydrogen atoms. ValueError naming the offending field."""
    return _sanitized_built_mol(build_mol(atoms, bonds))


def featurize_graph(atoms: Sequence[Any], bonds: Sequence[Any]) -> MolGraph:
    """Explicit atoms and bonds → :class:`MolGraph`.

    ``atoms``: element symbols or objects ``{"element": "C", "charge": 0, "aromatic": false,
    "hydrogens": 3}`` (all keys but element optional; without ``hydrogens`` RDKit adds
    implicit hydrogens to fill the valence; charge within ±``MAX_ABS_CHARGE``, hydrogens at
    most ``MAX_ATOM_HYDROGENS``). ``bonds``: ``[i, j, order]`` with 0-based atom indices and
    order 1, 2, 3 or 1.5 (aromatic). Hydrogen atoms may be listed explicitly; they are folded
    into their neighbour's H count as in SMILES parsing. Raises ValueError naming the
    offending field, e.g. ``"bonds[3]: atom index 7 out of range (5 atoms)"``.
    """
    return built_mol_graph(build_mol(atoms, bonds))


def batch_graphs(
    graphs: Sequence[MolGraph],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Disjoint union of graphs: → x ``[N,F]``, edge_index ``[2,E]`` (node ids offset per
    graph), edge_attr ``[E,Fe]``, batch ``[N]`` (graph id of every node, long)."""
    if len(graphs) == 0:
        raise ValueError("graphs: empty list, nothing to batch")
    f, fe = graphs[0].num_node_features, graphs[0].num_edge_features
    for g, graph in enumerate(graphs):
        if graph.num_node_features != f or graph.num_edge_features != fe:
            raise ValueError(
                f"graphs[{g}]: has {graph.num_node_features} node / {graph.num_edge_features} "
                f"edge features, graphs[0] has {f} / {fe}"
            )
    sizes = torch.tensor([graph.num_nodes for graph in graphs], dtype=torch.long)
    offsets = torch.cumsum(sizes, 0) - sizes
    x = torch.cat([graph.x for graph in graphs], 0)
    edge_index = torch.cat([graph.edge_index + offsets[g] for g, graph in enumerate(graphs)], 1)
    edge_attr = torch.cat([graph.edge_attr for graph in graphs], 0)
    batch = torch.repeat_interleave(torch.arange(len(graphs)), sizes)
    return x, edge_index, edge_attr, batch
