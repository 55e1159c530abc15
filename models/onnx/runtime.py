"""Running ONNX exports with ONNX Runtime, and checking them against torch.

- :func:`create_session`: an ``onnxruntime.InferenceSession`` on the preferred providers that
  this onnxruntime build has (``CUDAExecutionProvider`` with onnxruntime-gpu on a GPU machine,
  else ``CPUExecutionProvider``).
- :func:`run_image_session` / :func:`run_graph_session`: model inputs as torch tensors →
  outputs as float32 CPU tensors, the way the model server calls them.
- :func:`check_onnx_agreement`: the max abs difference between ONNX Runtime and torch on
  random inputs for a checkpoint (random images at the exported size; random molecules of
  varying sizes plus random DAGs with random features, batched together).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.capabilities import use_method
from models.checkpoint import load_checkpoint
from models.graph import PLSTMGraph
from models.molecule_features import (
    NUM_EDGE_FEATURES,
    NUM_NODE_FEATURES,
    MolGraph,
    batch_graphs,
    featurize_smiles,
)
from models.onnx.files import ONNX_FILE, read_sidecar
from models.onnx.graph import graph_feeds

PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")

CHECK_SMILES = (
    "C",
    "CC",
    "CCO",
    "[Na+].[Cl-]",
    "c1ccccc1O",
    "C1CC2CCC1C2",
    "N#CC(C)(C)C",
    "CC(=O)Nc1ccc(O)cc1",
    "O=C(O)c1ccccc1OC(C)=O",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "CCCCCCCCCCCCCCCCCC(=O)OCC(O)CO",
    "CC1=C(C(=O)C[C@@H]1OC(=O)[C@@H]1[C@@H](C=C(C)C)C1(C)C)CC=C",
    "OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O",
    "Clc1ccc(cc1)C(c1ccc(Cl)cc1)C(Cl)(Cl)Cl",
    "CC12CCC3C(CCC4=CC(=O)CCC34C)C1CCC2O",
)
"""Molecules of 1 to 30 heavy atoms (salts, rings, chains, stereo centres) for the checks."""


def session_providers(
    preferred: Sequence[str] = PREFERRED_PROVIDERS, available: Sequence[str] | None = None
) -> list[str]:
    """``preferred`` providers that onnxruntime has here, in order (at least the CPU one)."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    chosen = [p for p in preferred if p in available]
    return chosen or ["CPUExecutionProvider"]


PROVIDER_OPTIONS: dict[str, dict[str, str]] = {"CUDAExecutionProvider": {"use_tf32": "0"}}
"""Full float32 matmuls on GPUs (ORT's CUDA provider uses TF32 by default, which moves logits by
more than the 1e-3 that ONNX and torch must agree to)."""


def create_session(path: str | os.PathLike, providers: Sequence[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` on ``providers`` (default:
    :func:`session_providers`) with :data:`PROVIDER_OPTIONS`; ORT logs errors only.
    ValueError if the file does not load."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    chosen = session_providers() if providers is None else list(providers)
    entries = [(p, PROVIDER_OPTIONS[p]) if p in PROVIDER_OPTIONS else p for p in chosen]
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=entries)
    except Exception as exc:  # onnxruntime raises its own (Fail, InvalidGraph, ...) types
        raise ValueError(f"ONNX Runtime cannot load {path}: {exc}") from exc


def run_session(session: Any, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run ``session`` on the ``feeds`` it lists as inputs (others are ignored): the first
    output as a float32 CPU tensor."""
    arrays = {}
    for node in session.get_inputs():
        if node.name not in feeds:
            raise ValueError(f"the ONNX model needs input {node.name!r}, not provided")
        arrays[node.name] = np.ascontiguousarray(feeds[node.name].detach().cpu().numpy())
    return _first_output(session, arrays)


def _first_output(session: Any, arrays: dict[str, np.ndarray]) -> torch.Tensor:
    """``session.run``'s first output as a float32 tensor. ONNX Runtime's errors (Fail,
    InvalidArgument, ...) derive from Exception only: they become RuntimeError here, which
    the server reports per request like any other model failure."""
    try:
        (output, *_) = session.run(None, arrays)
    except Exception as exc:
        raise RuntimeError(f"ONNX Runtime failed: {type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(np.asarray(output, dtype=np.float32))


def max_abs_difference(
    session: Any, feeds: dict[str, torch.Tensor], expected: torch.Tensor
) -> float:
    """max |ONNX Runtime − expected| over the outputs (inf when they are not finite or their
    shapes differ). The padding graph of a graph export is dropped first."""
    out = run_session(session, feeds)
    if out.shape[0] == expected.shape[0] + 1 and "graph_ids" in feeds:
        out = out[:-1]
    if out.shape != expected.shape or not bool(torch.isfinite(out).all()):
        return float("inf")
    return float((out - expected.float().cpu()).abs().max())


def run_image_session(session: Any, images: torch.Tensor) -> torch.Tensor:
    """images ``[B,C,H,W]`` → logits ``[B,num_classes]`` float32 on the CPU. The session's
    first input takes the images (float32)."""
    name = session.get_inputs()[0].name
    array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
    return _first_output(session, {name: array})


def run_graph_session(
    session: Any,
    model: PLSTMGraph,
    x: torch.Tensor,
    edge_index: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    edge_attr: torch.Tensor | None,
    *,
    squarings: int,
) -> torch.Tensor:
    """A batch as ``model.forward`` takes it → outputs ``[num_graphs, C]`` float32 on the CPU,
    computed by an export of ``model`` (index tensors from :func:`graph_feeds`, padding graph
    dropped). ValueError for bad structure or graphs larger than the export supports."""
    feeds = graph_feeds(model, x, edge_index, batch, num_graphs, edge_attr, squarings=squarings)
    return run_session(session, feeds)[:num_graphs]


def random_dag_graph(
    rng: np.random.Generator, num_nodes: int, num_node_features: int, num_edge_features: int
) -> MolGraph:
    """A random DAG (a random tree plus extra edges, every edge from a lower to a higher node
    index, so nodes have several parents and children) with standard normal features."""
    pairs = {(int(rng.integers(0, i)), i) for i in range(1, num_nodes)}
    for _ in range(num_nodes // 3):
        a, b = sorted(int(v) for v in rng.integers(0, num_nodes, size=2))
        if a != b:
            pairs.add((a, b))
    edges = sorted(pairs)
    edge_index = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).T.contiguous()
    x = torch.from_numpy(rng.standard_normal((num_nodes, num_node_features))).float()
    edge_attr = torch.from_numpy(rng.standard_normal((len(edges), num_edge_features))).float()
    return MolGraph(x, edge_index, edge_attr)


def random_graph_batches(
    model: PLSTMGraph, num_batches: int = 4, seed: int = 0
) -> list[list[MolGraph]]:
    """Batches of 1 to 6 graphs of varying sizes: molecules from :data:`CHECK_SMILES` (when
    the model takes the molecule features) mixed with random DAGs of 1 to 24 nodes."""
    rng = np.random.default_rng(seed)
    molecules = model.num_node_features == NUM_NODE_FEATURES and model.num_edge_features in (
        0,
        NUM_EDGE_FEATURES,
    )
    batches = []
    for _ in range(num_batches):
        graphs = []
        for _ in range(int(rng.integers(1, 7))):
            if molecules and rng.random() < 0.6:
                graphs.append(featurize_smiles(str(rng.choice(CHECK_SMILES))))
            else:
                n = int(rng.integers(1, 25))
                graphs.append(
                    random_dag_graph(
                        rng, n, model.num_node_features, max(model.num_edge_features, 1)
                    )
                )
        batches.append(graphs)
    return batches


def graph_agreement(
    session: Any, model: PLSTMGraph, batches: Sequence[Sequence[MolGraph]], squarings: int
) -> float:
    """max |ONNX Runtime − torch| over ``batches`` of graphs for an export of ``model``."""
    worst = 0.0
    for graphs in batches:
        if not model.num_edge_features:
            graphs = [MolGraph(g.x, g.edge_index, g.x.new_zeros(g.num_edges, 0)) for g in graphs]
        x, edge_index, edge_attr, batch = batch_graphs(graphs)
        attr = edge_attr if model.num_edge_features else None
        with torch.inference_mode():
            expected = model(x, edge_index, batch, num_graphs=len(graphs), edge_attr=attr)
        out = run_graph_session(
            session, model, x, edge_index, batch, len(graphs), attr, squarings=squarings
        )
        if not bool(torch.isfinite(out).all()):
            return float("inf")
        worst = max(worst, float((out - expected).abs().max()))
    return worst


def image_agreement(
    session: Any,
    model: torch.nn.Module,
    image_size: Sequence[int],
    channels: int,
    batch_sizes: Sequence[int] = (1, 4),
    seed: int = 0,
) -> float:
    """max |ONNX Runtime − torch| on random images in [0, 1] of ``image_size`` (H, W)."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batch_sizes:
        images = torch.rand(batch, channels, *image_size, generator=gen)
        with torch.inference_mode():
            expected = model(images)
        out = run_image_session(session, images)
        if not bool(torch.isfinite(out).all()):
            return float("inf")
        worst = max(worst, float((out - expected).abs().max()))
    return worst


def check_onnx_agreement(
    checkpoint_dir: str | os.PathLike,
    onnx_path: str | os.PathLike | None = None,
    *,
    num_batches: int = 4,
    seed: int = 0,
    providers: Sequence[str] | None = ("CPUExecutionProvider",),
) -> float:
    """Max abs difference between ONNX Runtime (``onnx_path``, default
    ``<checkpoint_dir>/model.onnx``, which must exist) and the torch model of a checkpoint
    on random inputs: image models on batches of 1 and 4 random images at the exported size,
    graph models on ``num_batches`` batches of random molecules and DAGs of varying sizes.
    ``providers`` default to the CPU (``None``: :func:`session_providers`)."""
    path = Path(checkpoint_dir) / ONNX_FILE if onnx_path is None else Path(onnx_path)
    info = read_sidecar(path)
    if info is None:
        raise ValueError(f"{path}: no ONNX export with a sidecar (run `plstm export-onnx`)")
    model = load_checkpoint(checkpoint_dir, device="cpu").model
    session = create_session(path, providers)
    if info.get("kind") == "image":  # as the export recorded it
        size, chans = info["image_size"], int(info["channels"])
        return image_agreement(session, model, size, chans, (1, 4), seed)
    use_method(model, "parallel")
    batches = random_graph_batches(model, num_batches, seed)
    return graph_agreement(session, model, batches, int(info["squarings"]))
