"""Inference paths of a loaded model: the pLSTM forms (parallel / recurrent / chunkwise) and ONNX.

The forms give the same outputs and differ in cost: ``parallel`` materialises the gating
matrices (fast for small grids), ``chunkwise`` bounds memory on large grids, ``recurrent`` walks
the grid / DAG step by step. ViT (attention) and GIN (message passing) have one form,
``parallel``. ``auto`` (:func:`resolve_path`) picks:

1. ``onnx`` when the entry has an ONNX session and the input has at most
   ``auto_chunkwise_tokens`` tokens (an export is of the parallel form);
2. ``chunkwise`` when the model has it and the input has more tokens than that;
3. else ``parallel``.

Tokens are patches (H/p · W/p) for images and nodes for graphs.

ONNX extension point: whoever exports a model sets ``entry.onnx_session`` to an object with
ONNX Runtime's ``InferenceSession`` interface (``get_inputs()[0].name`` and
``run(None, {name: array}) -> [logits]``); image models only. Nothing here creates sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from app.settings import get_settings
from models.graph import GIN, PLSTMGraph
from models.molecule_features import MolGraph, batch_graphs
from models.vision import PLSTMVision, ViT

if TYPE_CHECKING:
    from app.repository import ModelEntry

PATHS = ("parallel", "recurrent", "chunkwise", "onnx", "auto")


def model_paths(entry: ModelEntry) -> tuple[str, ...]:
    """The explicit paths ``entry`` can run (``onnx`` only with a session)."""
    model = entry.model
    if isinstance(model, PLSTMVision):
        paths: tuple[str, ...] = ("parallel", "recurrent", "chunkwise")
    elif isinstance(model, PLSTMGraph):
        paths = ("parallel", "recurrent")
    elif isinstance(model, ViT | GIN):
        paths = ("parallel",)
    else:
        raise ValueError(f"model {entry.name!r}: no inference backend for {entry.architecture!r}")
    if entry.onnx_session is not None:
        paths += ("onnx",)
    return paths


def image_tokens(entry: ModelEntry, height: int, width: int) -> int:
    """Patches of an ``height`` x ``width`` image: (H/p)·(W/p)."""
    p = int(entry.config["patch_size"])
    return (height // p) * (width // p)


def resolve_path(
    entry: ModelEntry, path: str, tokens: int, chunkwise_tokens: int | None = None
) -> str:
    """The explicit path to run for ``path`` (which may be ``auto``) on an input of ``tokens``
    tokens. ``chunkwise_tokens`` defaults to ``settings.auto_chunkwise_tokens``.
    ValueError for an unknown path or one the model does not have."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {list(PATHS)}, got {path!r}")
    available = model_paths(entry)
    if path == "auto":
        limit = (
            get_settings().auto_chunkwise_tokens if chunkwise_tokens is None else chunkwise_tokens
        )
        if "onnx" in available and tokens <= limit:
            return "onnx"
        if "chunkwise" in available and tokens > limit:
            return "chunkwise"
        return "parallel"
    if path not in available:
        if path == "onnx":
            why = "no ONNX session is loaded for it"
        else:
            why = f"{entry.architecture} has only {[p for p in available if p != 'onnx']}"
        raise ValueError(f"path {path!r} is not available for model {entry.name!r}: {why}")
    return path


def _loaded_model(entry: ModelEntry) -> torch.nn.Module:
    if entry.model is None:
        raise RuntimeError(f"model {entry.name!r} version {entry.version} is not loaded")
    return entry.model


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def run_images(entry: ModelEntry, images: torch.Tensor, path: str) -> torch.Tensor:
    """images ``[B,3,H,W]`` float (H, W multiples of the patch size) → logits ``[B,C]``
    float32 on the CPU, computed by ``path`` (resolved with :func:`resolve_path`)."""
    model = _loaded_model(entry)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = (
            f"{images.dtype} {tuple(images.shape)}"
            if isinstance(images, torch.Tensor)
            else type(images).__name__
        )
        raise ValueError(f"images must be a float tensor [B,C,H,W], got {got}")
    if images.shape[0] == 0:
        raise ValueError("images: the batch is empty")
    path = resolve_path(entry, path, image_tokens(entry, images.shape[2], images.shape[3]))
    if path == "onnx":
        return _run_onnx(entry, images)
    with entry.lock, torch.inference_mode():
        if isinstance(model, PLSTMVision):
            model.set_method(path)
        x = images.to(entry.device, dtype=_model_dtype(model))
        return model(x).float().cpu()


def run_graphs(entry: ModelEntry, graphs: Sequence[MolGraph], path: str) -> torch.Tensor:
    """A list of G graphs → outputs ``[G,C]`` float32 on the CPU (logits, or regression
    values), computed by ``path``. ValueError naming the graph whose features do not fit."""
    model = _loaded_model(entry)
    if len(graphs) == 0:
        raise ValueError("graphs: empty list")
    for g, graph in enumerate(graphs):
        if not isinstance(graph, MolGraph):
            raise ValueError(f"graphs[{g}] must be a MolGraph, got {type(graph).__name__}")
        if graph.num_node_features != model.num_node_features:
            raise ValueError(
                f"graphs[{g}] has {graph.num_node_features} node features, model "
                f"{entry.name!r} expects {model.num_node_features}"
            )
        if model.num_edge_features and graph.num_edge_features != model.num_edge_features:
            raise ValueError(
                f"graphs[{g}] has {graph.num_edge_features} edge features, model "
                f"{entry.name!r} expects {model.num_edge_features}"
            )
    if model.num_edge_features == 0:  # the model ignores bonds' features: batch without them
        graphs = [MolGraph(g.x, g.edge_index, g.x.new_zeros(g.num_edges, 0)) for g in graphs]
    path = resolve_path(entry, path, sum(g.num_nodes for g in graphs))
    if path == "onnx":
        raise ValueError(f"path 'onnx' is not available for graph model {entry.name!r}")
    x, edge_index, edge_attr, batch = batch_graphs(graphs)
    with entry.lock, torch.inference_mode():
        if isinstance(model, PLSTMGraph):
            model.set_method(path)
        dtype = _model_dtype(model)
        out = model(
            x.to(entry.device, dtype=dtype),
            edge_index.to(entry.device),
            batch.to(entry.device),
            num_graphs=len(graphs),
            edge_attr=edge_attr.to(entry.device, dtype=dtype) if model.num_edge_features else None,
        )
        return out.float().cpu()


def _run_onnx(entry: ModelEntry, images: torch.Tensor) -> torch.Tensor:
    session = entry.onnx_session
    name = session.get_inputs()[0].name
    array = images.detach().to("cpu", torch.float32).numpy()
    with entry.lock:
        (logits, *_) = session.run(None, {name: np.ascontiguousarray(array)})
    return torch.from_numpy(np.asarray(logits, dtype=np.float32))
