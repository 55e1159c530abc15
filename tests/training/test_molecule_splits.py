"""Duplicate removal and the scaffold split: the functions on small inputs, and the solubility
set's splits (no scaffold or graph shared across splits, sizes, determinism)."""

from __future__ import annotations

import pytest

from training.data.molecule_splits import (
    first_occurrences,
    graph_key,
    murcko_scaffold,
    scaffold_split,
)
from training.data.molecules import SolubilityDataset, load_solubility_records


@pytest.mark.parametrize(
    ("a", "b"),
    [("C[C@H](N)O", "CC(N)O"), ("OCC", "CCO"), ("[13CH4]", "C"), ("c1ccccc1", "C1=CC=CC=C1")],
)
def test_graph_key_ignores_notation_stereo_and_isotopes(a: str, b: str) -> None:
    assert graph_key(a) == graph_key(b)


def test_graph_key_rejects_bad_smiles() -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        graph_key("C1CC")


@pytest.mark.parametrize(
    ("smiles", "scaffold"),
    [
        ("OCCc1ccccc1", "c1ccccc1"),
        ("CCO", ""),
        ("Cc1ccc(Cc2ccccc2)cc1O", "c1ccc(Cc2ccccc2)cc1"),
        ("CC(=O)Nc1ccc(O)cc1", "c1ccccc1"),
    ],
)
def test_murcko_scaffold(smiles: str, scaffold: str) -> None:
    assert murcko_scaffold(smiles) == scaffold


def test_first_occurrences_keeps_the_first_and_excludes() -> None:
    assert first_occurrences(["a", "b", "a", "c", "b", "d"], exclude={"c"}) == [0, 1, 5]


def test_scaffold_split_puts_the_largest_groups_in_train() -> None:
    # groups: x 4 items, y 3, z 1, w 1, v 1 (10 items): train takes x (4) and y (7 <= 8),
    # z fits train too (8 <= 8); w goes to validation (9 <= 9), v to test
    scaffolds = ["y", "x", "z", "x", "y", "w", "x", "v", "y", "x"]
    train, val, test = scaffold_split(scaffolds)
    assert train == [0, 1, 2, 3, 4, 6, 8, 9]
    assert (val, test) == ([5], [7])


def test_scaffold_split_breaks_ties_by_first_appearance() -> None:
    train, val, test = scaffold_split(["b", "a", "b", "a", "c"], (0.4, 0.4, 0.2))
    assert (train, val, test) == ([0, 2], [1, 3], [4])


def test_scaffold_split_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="summing to 1"):
        scaffold_split(["a"], (0.8, 0.1, 0.2))


def _split(scheme: str) -> dict[str, SolubilityDataset]:
    return {s: SolubilityDataset(s, scheme=scheme) for s in ("train", "val", "test")}


def test_scaffold_split_sizes() -> None:
    sizes = {name: len(ds) for name, ds in _split("scaffold").items()}
    # 1,282 molecules of both files, 8 duplicates removed: 1,274 = 1,019 + 127 + 128
    assert sizes == {"train": 1019, "val": 127, "test": 128}


def test_scaffold_split_shares_no_scaffold_across_splits() -> None:
    scaffolds = {
        name: {murcko_scaffold(s) for s in ds.smiles} for name, ds in _split("scaffold").items()
    }
    assert not scaffolds["train"] & scaffolds["val"]
    assert not scaffolds["train"] & scaffolds["test"]
    assert not scaffolds["val"] & scaffolds["test"]
    assert "" in scaffolds["train"]  # the acyclic molecules, the largest group


@pytest.mark.parametrize("scheme", ["random", "scaffold"])
def test_no_graph_occurs_twice(scheme: str) -> None:
    keys = [graph_key(s) for ds in _split(scheme).values() for s in ds.smiles]
    assert len(keys) == len(set(keys))


def test_the_sdf_scheme_keeps_the_duplicates() -> None:
    splits = _split("sdf")
    train_keys = {graph_key(s) for s in splits["train"].smiles + splits["val"].smiles}
    shared = [s for s in splits["test"].smiles if graph_key(s) in train_keys]
    assert len(shared) == 4
    assert len(splits["train"]) + len(splits["val"]) == 1025


def test_random_scheme_removes_duplicates_from_the_train_file_only() -> None:
    splits = _split("random")
    assert len(splits["test"]) == 257
    assert len(splits["train"]) + len(splits["val"]) == 1025 - 8
    assert splits["test"].records == list(load_solubility_records("test"))


@pytest.mark.parametrize("scheme", ["random", "scaffold"])
def test_splits_are_deterministic(scheme: str) -> None:
    first, again = _split(scheme), _split(scheme)
    for name in ("train", "val", "test"):
        assert first[name].smiles == again[name].smiles


def test_bad_scheme() -> None:
    with pytest.raises(ValueError, match="scheme must be one of"):
        SolubilityDataset("train", scheme="cluster")
