"""The TU-format loader on the hand-written TINY fixture (4 graphs) and on broken copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from models.graph import GIN, PLSTMGraph
from training.data.molecules import collate_graphs
from training.data.tu import MAX_DEGREE, load_tu

TINY = Path(__file__).parent / "fixtures" / "TINY"
FILES = ("A", "graph_indicator", "graph_labels", "node_labels", "node_attributes", "edge_labels")


def read(name: str) -> list[str]:
    return (TINY / f"TINY_{name}.txt").read_text().splitlines()


def copy_fixture(tmp_path: Path, **replace: list[str] | None) -> Path:
    """A copy of TINY in tmp_path/TINY with some files replaced (None: removed)."""
    root = tmp_path / "TINY"
    shutil.copytree(TINY, root)
    for name, lines in replace.items():
        path = root / f"TINY_{name}.txt"
        if lines is None:
            path.unlink()
        else:
            path.write_text("\n".join(lines) + "\n")
    return root


def test_fixture_contents() -> None:
    ds = load_tu(TINY)
    assert ds.name == "TINY" and len(ds) == 4
    assert ds.class_names == ("-1", "1")
    assert ds.labels == [1, 0, 1, 0]
    assert ds.node_label_values == [0, 1, 2] and ds.edge_label_values == [0, 1, 2]
    assert ds.num_node_features == 3 + 2 + MAX_DEGREE + 1
    assert ds.num_edge_features == 3
    assert [g.num_nodes for g in ds.graphs] == [3, 4, 2, 1]
    # undirected duplicates collapse, the self-loop 9-9 is dropped
    assert [g.num_edges for g in ds.graphs] == [2, 4, 1, 0]
    for g in ds.graphs:
        src, dst = g.edge_index.tolist()
        assert all(s < d for s, d in zip(src, dst, strict=True))
        assert list(zip(src, dst, strict=True)) == sorted(set(zip(src, dst, strict=True)))
        degree = torch.bincount(g.edge_index.flatten(), minlength=g.num_nodes)
        assert g.x[:, 5:].argmax(1).tolist() == degree.tolist()
        assert g.x[:, 5:].sum(1).tolist() == [1.0] * g.num_nodes
        assert g.edge_attr.sum(1).tolist() == [1.0] * g.num_edges
    sample = ds[2]
    assert sample.label == 1 and sample.target is None
    assert sample.graph.edge_attr.tolist() == [[0.0, 0.0, 1.0]]  # edge label 2
    assert sorted(sample.graph.x[:, 3:5].tolist()) == [[1.0, 1.0], [3.0, -2.0]]


def test_file_ordering() -> None:
    ds = load_tu(TINY, ordering="file")
    path, cycle = ds.graphs[0], ds.graphs[1]
    assert path.edge_index.tolist() == [[0, 1], [1, 2]]
    assert path.x[:, :3].argmax(1).tolist() == [0, 1, 0]  # node labels 0, 1, 0
    assert path.x[:, 3:5].tolist() == [[0.5, 1.0], [0.25, -1.0], [1.5, 0.0]]
    assert path.edge_attr.argmax(1).tolist() == [0, 1]
    # the 4-cycle 4-5-6-7-4: (1,4) of the file orients to (0,3)
    assert cycle.edge_index.tolist() == [[0, 0, 1, 2], [1, 3, 2, 3]]
    assert cycle.edge_attr.argmax(1).tolist() == [0, 1, 1, 0]


def test_wl_ordering_ignores_the_file_numbering(tmp_path: Path) -> None:
    """Renumber the nodes inside every graph and shuffle the edge lines: same tensors."""
    gen = torch.Generator().manual_seed(0)
    indicator = [int(v) for v in read("graph_indicator")]
    new_id = list(range(len(indicator)))
    start = 0
    for g in sorted(set(indicator)):
        size = indicator.count(g)
        perm = torch.randperm(size, generator=gen).tolist()
        for k in range(size):
            new_id[start + k] = start + perm[k]
        start += size
    old_of = {new: old for old, new in enumerate(new_id)}
    per_node = {
        name: [read(name)[old_of[n]] for n in range(len(indicator))]
        for name in ("graph_indicator", "node_labels", "node_attributes")
    }
    a_rows = [[int(v) for v in line.split(",")] for line in read("A")]
    edge_labels = read("edge_labels")
    order = torch.randperm(len(a_rows), generator=gen).tolist()
    a_lines = [f"{new_id[a_rows[k][1] - 1] + 1}, {new_id[a_rows[k][0] - 1] + 1}" for k in order]
    root = copy_fixture(
        tmp_path, A=a_lines, edge_labels=[edge_labels[k] for k in order], **per_node
    )
    ref, renumbered = load_tu(TINY), load_tu(root)
    assert (tmp_path / "TINY" / "TINY_A.txt").read_text() != (TINY / "TINY_A.txt").read_text()
    for a, b in zip(ref.graphs, renumbered.graphs, strict=True):
        assert torch.equal(a.x, b.x)
        assert torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.edge_attr, b.edge_attr)


def test_optional_files_absent(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, node_labels=None, node_attributes=None, edge_labels=None)
    ds = load_tu(root)
    assert ds.num_node_features == MAX_DEGREE + 1 and ds.num_edge_features == 0
    assert ds.node_label_values is None and ds.edge_label_values is None
    assert [g.num_edges for g in ds.graphs] == [2, 4, 1, 0]
    assert ds.graphs[1].x.argmax(1).tolist() == [2, 2, 2, 2]  # degree 2 in the 4-cycle


@pytest.mark.parametrize("model_cls", [PLSTMGraph, GIN])
def test_usable_by_graph_models(model_cls: type) -> None:
    ds = load_tu(TINY)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_graphs)))
    assert batch.num_graphs == 4 and batch.targets is None
    torch.manual_seed(0)
    model = model_cls(
        ds.num_node_features,
        num_classes=len(ds.class_names),
        dim=8,
        depth=2,
        num_edge_features=ds.num_edge_features,
    )
    out = model(batch.x, batch.edge_index, batch.batch, batch.num_graphs, batch.edge_attr)
    assert out.shape == (4, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"A": None}, r"TINY_A.txt: required file missing"),
        ({"graph_indicator": None}, r"TINY_graph_indicator.txt: required file missing"),
        ({"graph_labels": None}, r"TINY_graph_labels.txt: required file missing"),
        ({"A": ["1, 2", "2, 1", "2; x"]}, r"TINY_A.txt line 3: expected integers, got '2; x'"),
        ({"A": ["1, 2", "2, 1, 3"]}, r"TINY_A.txt line 2: expected 2 value\(s\), got 3"),
        ({"A": ["1, 2", "", "2, 1"]}, r"TINY_A.txt line 2: empty line"),
        (
            {"A": ["1, 2", "2, 11"], "edge_labels": None},
            r"TINY_A.txt line 2: node id 11 out of range \(1..10\)",
        ),
        (
            {"A": ["1, 2", "3, 4"], "edge_labels": None},
            r"TINY_A.txt line 2: edge \(3, 4\) joins graph 1 and graph 2",
        ),
        (
            {"graph_indicator": ["1", "1", "1", "2", "2", "2", "2", "3", "3", "5"]},
            r"TINY_graph_indicator.txt line 10: graph id 5 out of range \(1..4",
        ),
        (
            {"graph_indicator": ["1", "1", "1", "2", "2", "2", "2", "3", "3", "3"]},
            r"TINY_graph_indicator.txt: graph 4 has no nodes",
        ),
        ({"graph_labels": ["1", "-1", "one", "-1"]}, r"TINY_graph_labels.txt line 3"),
        ({"graph_labels": []}, r"TINY_graph_labels.txt: no graphs"),
        ({"node_labels": ["0"] * 9}, r"TINY_node_labels.txt: 9 lines, expected 10"),
        (
            {"node_attributes": ["1.0, 2.0"] * 9 + ["1.0"]},
            r"TINY_node_attributes.txt line 10: expected 2 values like line 1, got 1",
        ),
        ({"edge_labels": ["0"] * 13}, r"TINY_edge_labels.txt: 13 lines, expected 14"),
        (
            {"edge_labels": ["0", "1", *["0"] * 12]},
            r"TINY_edge_labels.txt line 2: edge \(2, 1\) has label 1 but line 1 gives it 0",
        ),
    ],
)
def test_errors(tmp_path: Path, replace: dict, message: str) -> None:
    root = copy_fixture(tmp_path, **replace)
    with pytest.raises(ValueError, match=message):
        load_tu(root)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        load_tu(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="ordering must be one of"):
        load_tu(TINY, ordering="bfs")
    with pytest.raises(ValueError, match=r"MUTAG_A\.txt: required file missing"):
        load_tu(TINY, "MUTAG")
