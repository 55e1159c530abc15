"""Duplicate removal and the Bemis-Murcko scaffold split of a molecule data set.

- :func:`graph_key`: the canonical SMILES without stereochemistry or isotopes. Two molecules
  with the same key have the same graph for the featuriser (which ignores chirality and
  isotopes), so a model cannot tell them apart: they count as duplicates.
- :func:`murcko_scaffold`: the Bemis-Murcko scaffold (ring systems and the linkers between
  them, side chains removed) as canonical SMILES, "" for a molecule without rings.
- :func:`scaffold_split`: MoleculeNet's deterministic scaffold split (Wu et al. 2018, as in
  DeepChem's ``ScaffoldSplitter``): molecules grouped by scaffold, groups sorted from the
  largest down (ties by first appearance), each group put whole into train while train stays
  within its fraction, else into validation while train + validation stay within theirs, else
  into test. Test therefore holds the rarest scaffolds, none of which occurs in train.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rdkit import Chem, rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold

SCAFFOLD_FRACTIONS = (0.8, 0.1, 0.1)
"""MoleculeNet's train / validation / test fractions of the scaffold split."""


def _mol(smiles: str) -> Chem.Mol:
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    return mol


def graph_key(smiles: str) -> str:
    """Canonical SMILES of ``smiles`` without stereochemistry and isotopes."""
    return Chem.MolToSmiles(_mol(smiles), isomericSmiles=False)


def murcko_scaffold(smiles: str) -> str:
    """Bemis-Murcko scaffold of ``smiles`` as canonical SMILES ("" without rings)."""
    return MurckoScaffold.MurckoScaffoldSmiles(mol=_mol(smiles), includeChirality=False)


def first_occurrences(keys: Sequence[str], exclude: Iterable[str] = ()) -> list[int]:
    """Indices (ascending) of the first item of every key, leaving out keys in ``exclude``."""
    seen = set(exclude)
    kept = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept


def scaffold_split(
    scaffolds: Sequence[str], fractions: tuple[float, float, float] = SCAFFOLD_FRACTIONS
) -> tuple[list[int], list[int], list[int]]:
    """(train, validation, test) index lists (each ascending) of items with these scaffolds:
    whole scaffold groups, largest first, fill train up to ``fractions[0]`` of the items,
    then validation up to ``fractions[0] + fractions[1]``, the rest goes to test."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    groups: dict[str, list[int]] = {}
    for i, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(i)
    ordered = sorted(groups.values(), key=lambda members: (-len(members), members[0]))
    train_cut = fractions[0] * len(scaffolds)
    val_cut = (fractions[0] + fractions[1]) * len(scaffolds)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for members in ordered:
        if len(train) + len(members) <= train_cut:
            train.extend(members)
        elif len(train) + len(val) + len(members) <= val_cut:
            val.extend(members)
        else:
            test.extend(members)
    return sorted(train), sorted(val), sorted(test)
