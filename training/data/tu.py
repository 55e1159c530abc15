"""Graph classification data in the TU text format (Morris et al. 2020) from a local folder.

Files in ``root`` for a data set ``NAME`` (one line per item, values comma separated, node and
graph ids 1-based):

- ``NAME_A.txt``: one edge ``i, j`` per line (global node ids); usually both directions.
- ``NAME_graph_indicator.txt``: line n holds the graph id of node n.
- ``NAME_graph_labels.txt``: line g holds the integer class label of graph g.
- optional ``NAME_node_labels.txt`` (one integer per node), ``NAME_node_attributes.txt``
  (floats per node, same count on every line), ``NAME_edge_labels.txt`` (one integer per
  line of ``NAME_A.txt``).

Every graph becomes a :class:`~models.molecule_features.MolGraph` DAG:

- node features: one-hot node label (over the labels present in the data set, if the file
  exists) | node attributes (if the file exists) | one-hot degree 0..``MAX_DEGREE`` (larger
  degrees share the last bucket; paper D.4 encodes the neighbour count as well);
- edge features: one-hot edge label (if the file exists), else none (``[E, 0]``);
- edges: self-loops are dropped, the two directions of an undirected edge (and repeated
  lines) collapse into one edge, oriented from the lower to the higher node index after the
  canonical ordering below; edges sorted by (source, target).

Canonical ordering (``ordering=``): ``"wl"`` (default) sorts the nodes of each graph by their
stable Weisfeiler-Lehman colour — colours start from the node feature vector and are refined
by the sorted multiset of (edge label, neighbour colour) until the partition stops
splitting; colours are ranks of sorted signatures, so they do not depend on the numbering in
the files — and breaks ties (WL-equivalent nodes) by file order. ``"file"`` keeps the order
of the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from models.molecule_features import MolGraph
from training.data.molecules import GraphSample

MAX_DEGREE = 9
ORDERINGS = ("wl", "file")


def _read_rows(path: Path, *, kind: type, width: int | None) -> list[list]:
    """Rows of numbers from a TU file; trailing blank lines allowed, nothing else is."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path.name}: cannot read ({err.strerror})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows: list[list] = []
    for no, line in enumerate(lines, start=1):
        tokens = [t for t in line.replace(",", " ").split() if t]
        if not tokens:
            raise ValueError(f"{path.name} line {no}: empty line")
        if width is not None and len(tokens) != width:
            raise ValueError(
                f"{path.name} line {no}: expected {width} value(s), got {len(tokens)}: {line!r}"
            )
        if rows and len(tokens) != len(rows[0]):
            raise ValueError(
                f"{path.name} line {no}: expected {len(rows[0])} values like line 1, "
                f"got {len(tokens)}"
            )
        try:
            rows.append([kind(t) for t in tokens])
        except ValueError:
            what = "integer" if kind is int else "number"
            raise ValueError(f"{path.name} line {no}: expected {what}s, got {line!r}") from None
    return rows


def _one_hot_columns(values: list[int]) -> tuple[torch.Tensor, list[int]]:
    """``[len(values), C]`` one-hot over the sorted distinct values, and those values."""
    distinct = sorted(set(values))
    col = {v: c for c, v in enumerate(distinct)}
    out = torch.zeros(len(values), len(distinct))
    out[torch.arange(len(values)), torch.tensor([col[v] for v in values], dtype=torch.long)] = 1
    return out, distinct


def _wl_order(x: torch.Tensor, edges: list[tuple[int, int, int]]) -> list[int]:
    """Node order of one graph by stable WL colour, ties by index. edges: (a, b, edge label)."""
    n = x.shape[0]
    nbrs: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for a, b, label in edges:
        nbrs[a].append((b, label))
        nbrs[b].append((a, label))

    def ranks(signatures: list) -> list[int]:
        table = {s: r for r, s in enumerate(sorted(set(signatures)))}
        return [table[s] for s in signatures]

    colour = ranks([tuple(row) for row in x.tolist()])
    while True:
        signature = [
            (colour[v], tuple(sorted((label, colour[u]) for u, label in nbrs[v]))) for v in range(n)
        ]
        refined = ranks(signature)
        if len(set(refined)) == len(set(colour)):
            break
        colour = refined
    return sorted(range(n), key=lambda v: (colour[v], v))


@dataclass(frozen=True)
class _RawEdges:
    """Collapsed undirected edges per graph (local node ids) with their label column."""

    per_graph: list[list[tuple[int, int, int]]]
    edge_label_values: list[int] | None


def _collect_edges(
    a_rows: list[list[int]],
    edge_labels: list[int] | None,
    graph_of: list[int],
    local: list[int],
    num_graphs: int,
    a_name: str,
    el_name: str,
) -> _RawEdges:
    num_nodes = len(graph_of)
    distinct = sorted(set(edge_labels)) if edge_labels is not None else None
    per_graph: list[list[tuple[int, int, int]]] = [[] for _ in range(num_graphs)]
    seen: dict[tuple[int, int], tuple[int, int]] = {}  # node pair -> (label, line)
    for no, (i, j) in enumerate(a_rows, start=1):
        for node in (i, j):
            if not 1 <= node <= num_nodes:
                raise ValueError(
                    f"{a_name} line {no}: node id {node} out of range (1..{num_nodes})"
                )
        gi, gj = graph_of[i - 1], graph_of[j - 1]
        if gi != gj:
            raise ValueError(
                f"{a_name} line {no}: edge ({i}, {j}) joins graph {gi + 1} and graph {gj + 1}"
            )
        if i == j:
            continue  # a DAG has no self-loops
        label = distinct.index(edge_labels[no - 1]) if edge_labels is not None else 0
        key = (min(i, j), max(i, j))
        if key in seen:
            if seen[key][0] != label:
                raise ValueError(
                    f"{el_name} line {no}: edge ({i}, {j}) has label {edge_labels[no - 1]} "
                    f"but line {seen[key][1]} gives it {distinct[seen[key][0]]}"
                )
            continue
        seen[key] = (label, no)
        per_graph[gi].append((local[i - 1], local[j - 1], label))
    return _RawEdges(per_graph, distinct)


class TUDataset(Dataset):
    """Graphs of a TU-format folder as :class:`GraphSample` items (graph, class index, None).

    Attributes: ``name``, ``graphs`` (list of MolGraph DAGs), ``labels`` (class indices),
    ``class_names`` (the file's label values as strings, sorted numerically; class index c is
    ``class_names[c]``), ``node_label_values`` / ``edge_label_values`` (the one-hot columns;
    None without the file), ``num_node_features``, ``num_edge_features``, ``ordering``.
    """

    def __init__(
        self,
        name: str,
        graphs: list[MolGraph],
        labels: list[int],
        class_names: tuple[str, ...],
        node_label_values: list[int] | None,
        edge_label_values: list[int] | None,
        ordering: str,
    ) -> None:
        self.name = name
        self.graphs = graphs
        self.labels = labels
        self.class_names = class_names
        self.node_label_values = node_label_values
        self.edge_label_values = edge_label_values
        self.ordering = ordering

    @property
    def num_node_features(self) -> int:
        return self.graphs[0].num_node_features

    @property
    def num_edge_features(self) -> int:
        return self.graphs[0].num_edge_features

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> GraphSample:
        return GraphSample(self.graphs[index], self.labels[index], None)


def load_tu(root: str | Path, name: str | None = None, *, ordering: str = "wl") -> TUDataset:
    """Read the TU data set ``name`` (default: the folder's name) from folder ``root``.

    Raises ValueError naming the file (and line) for a missing or malformed file.
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {list(ORDERINGS)}, got {ordering!r}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    name = name or root.name

    def path(suffix: str, required: bool) -> Path | None:
        p = root / f"{name}_{suffix}.txt"
        if not p.is_file():
            if required:
                raise ValueError(f"{p.name}: required file missing in {root}")
            return None
        return p

    a_path = path("A", True)
    gi_path = path("graph_indicator", True)
    gl_path = path("graph_labels", True)
    nl_path = path("node_labels", False)
    na_path = path("node_attributes", False)
    el_path = path("edge_labels", False)

    graph_ids = [r[0] for r in _read_rows(gi_path, kind=int, width=1)]
    graph_labels = [r[0] for r in _read_rows(gl_path, kind=int, width=1)]
    num_nodes, num_graphs = len(graph_ids), len(graph_labels)
    if num_graphs == 0:
        raise ValueError(f"{gl_path.name}: no graphs")
    graph_of, local, sizes = [], [], [0] * num_graphs
    for no, g in enumerate(graph_ids, start=1):
        if not 1 <= g <= num_graphs:
            raise ValueError(
                f"{gi_path.name} line {no}: graph id {g} out of range (1..{num_graphs}, "
                f"one per line of {gl_path.name})"
            )
        graph_of.append(g - 1)
        local.append(sizes[g - 1])
        sizes[g - 1] += 1
    empty = [g + 1 for g, s in enumerate(sizes) if s == 0]
    if empty:
        raise ValueError(f"{gi_path.name}: graph {empty[0]} has no nodes")

    def per_node(p: Path | None, kind: type, width: int | None) -> list[list] | None:
        if p is None:
            return None
        rows = _read_rows(p, kind=kind, width=width)
        if len(rows) != num_nodes:
            raise ValueError(
                f"{p.name}: {len(rows)} lines, expected {num_nodes} (one per line of "
                f"{gi_path.name})"
            )
        return rows

    node_labels = per_node(nl_path, int, 1)
    node_attrs = per_node(na_path, float, None)
    a_rows = _read_rows(a_path, kind=int, width=2)
    edge_labels = None
    if el_path is not None:
        edge_labels = [r[0] for r in _read_rows(el_path, kind=int, width=1)]
        if len(edge_labels) != len(a_rows):
            raise ValueError(
                f"{el_path.name}: {len(edge_labels)} lines, expected {len(a_rows)} "
                f"(one per line of {a_path.name})"
            )
    raw = _collect_edges(
        a_rows,
        edge_labels,
        graph_of,
        local,
        num_graphs,
        a_path.name,
        el_path.name if el_path is not None else "",
    )

    degree = [0] * num_nodes
    # nodes of graph g in file order, i.e. by their local id
    members: list[list[int]] = [[] for _ in range(num_graphs)]
    for n, g in enumerate(graph_of):
        members[g].append(n)
    for g, edges in enumerate(raw.per_graph):
        for a, b, _ in edges:
            degree[members[g][a]] += 1
            degree[members[g][b]] += 1

    columns = []
    node_label_values = None
    if node_labels is not None:
        one_hot, node_label_values = _one_hot_columns([r[0] for r in node_labels])
        columns.append(one_hot)
    if node_attrs is not None:
        columns.append(torch.tensor(node_attrs, dtype=torch.float32))
    deg = torch.zeros(num_nodes, MAX_DEGREE + 1)
    deg[torch.arange(num_nodes), torch.tensor(degree).clamp(max=MAX_DEGREE)] = 1
    columns.append(deg)
    x_all = torch.cat(columns, 1)
    num_edge_features = len(raw.edge_label_values) if raw.edge_label_values is not None else 0

    graphs = []
    for g in range(num_graphs):
        x = x_all[members[g]]
        edges = raw.per_graph[g]
        order = _wl_order(x, edges) if ordering == "wl" else list(range(len(members[g])))
        pos = [0] * len(order)
        for p, v in enumerate(order):
            pos[v] = p
        oriented = sorted(
            (min(pos[a], pos[b]), max(pos[a], pos[b]), label) for a, b, label in edges
        )
        edge_index = torch.tensor(
            [[e[0] for e in oriented], [e[1] for e in oriented]], dtype=torch.long
        ).reshape(2, len(oriented))
        edge_attr = torch.zeros(len(oriented), num_edge_features)
        if num_edge_features:
            edge_attr[
                torch.arange(len(oriented)),
                torch.tensor([e[2] for e in oriented], dtype=torch.long),
            ] = 1
        graphs.append(MolGraph(x=x[order].contiguous(), edge_index=edge_index, edge_attr=edge_attr))

    distinct = sorted(set(graph_labels))
    labels = [distinct.index(v) for v in graph_labels]
    return TUDataset(
        name=name,
        graphs=graphs,
        labels=labels,
        class_names=tuple(str(v) for v in distinct),
        node_label_values=node_label_values,
        edge_label_values=raw.edge_label_values,
        ordering=ordering,
    )
