"""Inference paths of a loaded model: the pLSTM forms (parallel / recurrent / chunkwise) and ONNX.

The forms give the same outputs and differ in cost: ``parallel`` materialises the gating
matrices (fast for small grids), ``chunkwise`` bounds memory on large grids, ``recurrent`` walks
the grid / DAG step by step. ViT (attention) and GIN (message passing) have one form,
``parallel``. ``auto`` (:func:`resolve_path`) picks:

1. ``onnx`` when the entry has an ONNX session, the input has at most
   :func:`auto_chunkwise_limit` tokens (an export is of a parallel form) and, for image models,
   the image has the exported resolution (an image export has a fixed H×W);
2. ``chunkwise`` when the model has it and the input has more tokens than that;
3. else ``parallel``.

Tokens are patches (H/p · W/p) for images and nodes for graphs; the image size (H, W) is
passed beside them where the ONNX rule needs it.

ONNX: the repository (``PLSTM_ONNX``) sets ``entry.onnx_session`` to an ONNX Runtime
``InferenceSession`` of the checkpoint's export and ``entry.onnx_export`` to its sidecar
(:mod:`models.onnx.export`): image exports take ``images [B,C,H,W]`` at
``onnx_export["image_size"]`` only (explicit ``path=onnx`` at another size is a ValueError),
graph exports take the features plus per-batch index tensors (:mod:`models.onnx.graph`).
Any object with the session interface (``get_inputs()``, ``run(None, feeds)``) works; without
``onnx_export`` an image session is assumed to take any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from app.core.settings import get_settings
from app.serving.cost_formulas import grid_forms_on
from models.capabilities import use_method
from models.molecule_features import MolGraph, batch_graphs
from models.onnx.runtime import run_graph_session, run_image_session

if TYPE_CHECKING:
    from app.serving.repository import ModelEntry

PATHS = ("parallel", "recurrent", "chunkwise", "onnx", "auto")
CHUNKWISE_TOKENS = 3072
"""Tokens above which ``auto`` usually takes chunkwise where the grid layers run their PyTorch
forms (a GPU, calls with autograd, or no C compiler)."""
NATIVE_CHUNKWISE_TOKENS = 1024
"""The same where the CPU forms' C kernels serve the model (docs/benchmarks/auto_path_cpu2.md)."""


def auto_chunkwise_limit(device: torch.device, *, autograd: bool = False) -> int:
    """Tokens above which ``auto`` usually takes chunkwise on ``device``:
    ``settings.auto_chunkwise_tokens`` when set, else :data:`NATIVE_CHUNKWISE_TOKENS` where
    the C kernels serve calls without autograd, else :data:`CHUNKWISE_TOKENS`."""
    configured = get_settings().auto_chunkwise_tokens
    if configured is not None:
        return configured
    if not autograd and grid_forms_on(device) == "native":
        return NATIVE_CHUNKWISE_TOKENS
    return CHUNKWISE_TOKENS


def model_paths(entry: ModelEntry) -> tuple[str, ...]:
    """The explicit paths ``entry`` can run: the inference methods its model class declares
    (:mod:`models.capabilities`), and ``onnx`` with a session."""
    capabilities = entry.capabilities
    if capabilities is None:
        raise ValueError(f"model {entry.name!r}: no inference backend for {entry.architecture!r}")
    return capabilities.methods + (("onnx",) if entry.onnx_session is not None else ())


def image_tokens(entry: ModelEntry, height: int, width: int) -> int:
    """Patches of an ``height`` x ``width`` image: (H/p)·(W/p)."""
    p = int(entry.config["patch_size"])
    return (height // p) * (width // p)


def onnx_image_size(entry: ModelEntry) -> tuple[int, int] | None:
    """(H, W) the entry's image export takes; None for graphs or when no size is recorded."""
    info = entry.onnx_export if isinstance(entry.onnx_export, dict) else {}
    size = info.get("image_size")
    return (int(size[0]), int(size[1])) if size else None


def _onnx_fits(entry: ModelEntry, size: tuple[int, int] | None) -> bool:
    """Whether an image of ``size`` (None: unknown) may run on the entry's ONNX export."""
    exported = onnx_image_size(entry)
    return exported is None or (size is not None and tuple(size) == exported)


def resolve_path(
    entry: ModelEntry,
    path: str,
    tokens: int,
    chunkwise_tokens: int | None = None,
    *,
    size: tuple[int, int] | None = None,
) -> str:
    """The explicit path to run for ``path`` (which may be ``auto``) on an input of ``tokens``
    tokens. ``chunkwise_tokens`` defaults to :func:`auto_chunkwise_limit` of the entry's
    device; ``size`` is (H, W) of an image (None: unknown, then an ONNX image export is not
    taken by ``auto``). ValueError for an unknown path or one the model does not have (or, for
    ``onnx``, not at this image size)."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {list(PATHS)}, got {path!r}")
    available = model_paths(entry)
    if path == "auto":
        limit = auto_chunkwise_limit(entry.device) if chunkwise_tokens is None else chunkwise_tokens
        if "onnx" in available and tokens <= limit and _onnx_fits(entry, size):
            return "onnx"
        if "chunkwise" in available and tokens > limit:
            return "chunkwise"
        return "parallel"
    if path not in available:
        if path == "onnx":
            why = "no ONNX session is loaded for it"
            if entry.onnx_error:
                why += f" ({entry.onnx_error})"
        else:
            why = f"{entry.architecture} has only {[p for p in available if p != 'onnx']}"
        raise ValueError(f"path {path!r} is not available for model {entry.name!r}: {why}")
    if path == "onnx" and size is not None:
        _check_onnx_size(entry, size)
    return path


def _check_onnx_size(entry: ModelEntry, size: tuple[int, int]) -> None:
    if not _onnx_fits(entry, size):
        h, w = onnx_image_size(entry)  # type: ignore[misc]
        raise ValueError(
            f"path 'onnx' of model {entry.name!r} takes {h}x{w} images only (the exported "
            f"resolution), got {size[0]}x{size[1]}: use path=auto, parallel, recurrent or "
            "chunkwise, or resize=model"
        )


def _loaded_model(entry: ModelEntry) -> torch.nn.Module:
    if entry.model is None:
        raise RuntimeError(f"model {entry.name!r} version {entry.version} is not loaded")
    return entry.model


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _precision(entry: ModelEntry) -> torch.autocast:
    """Autocast for the entry's model calls (``entry.autocast_dtype``; disabled for None)."""
    dtype = entry.autocast_dtype
    return torch.autocast(entry.device.type, dtype=dtype, enabled=dtype is not None)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = (
            f"{images.dtype} {tuple(images.shape)}"
            if isinstance(images, torch.Tensor)
            else type(images).__name__
        )
        raise ValueError(f"images must be a float tensor [B,C,H,W], got {got}")
    if images.shape[0] == 0:
        raise ValueError("images: the batch is empty")


def run_images(entry: ModelEntry, images: torch.Tensor, path: str) -> torch.Tensor:
    """images ``[B,3,H,W]`` float (H, W multiples of the patch size) → logits ``[B,C]``
    float32 on the CPU, computed by ``path`` (resolved with :func:`resolve_path`, so ``auto``
    is taken). For a path already resolved, :func:`forward_images`."""
    _loaded_model(entry)
    _check_images(images)
    tokens = image_tokens(entry, images.shape[2], images.shape[3])
    path = resolve_path(entry, path, tokens, size=(images.shape[2], images.shape[3]))
    return _forward_images(entry, images, path)


def forward_images(entry: ModelEntry, images: torch.Tensor, path: str) -> torch.Tensor:
    """:func:`run_images` on ``path`` as :func:`resolve_path` (or the cost limits) gave it
    for these images: the batches of a request's path, resolved once by its route."""
    _loaded_model(entry)
    _check_images(images)
    return _forward_images(entry, images, path)


def _forward_images(entry: ModelEntry, images: torch.Tensor, path: str) -> torch.Tensor:
    model = _loaded_model(entry)
    if path == "onnx":
        with entry.lock:
            return run_image_session(entry.onnx_session, images)
    with entry.lock, torch.inference_mode(), _precision(entry):
        use_method(model, path)
        x = images.to(entry.device, dtype=_model_dtype(model))
        if entry.graphs is not None and path == "parallel":
            tokens = image_tokens(entry, images.shape[2], images.shape[3])
            return entry.graphs(model, x, int(tokens), key=path).float().cpu()
        return model(x).float().cpu()


def run_graphs(entry: ModelEntry, graphs: Sequence[MolGraph], path: str) -> torch.Tensor:
    """A list of G graphs → outputs ``[G,C]`` float32 on the CPU (logits, or regression
    values), computed by ``path`` (resolved with :func:`resolve_path`, so ``auto`` is taken).
    ValueError naming the graph whose features do not fit. For a path already resolved,
    :func:`forward_graphs`."""
    graphs = _checked_graphs(entry, graphs)
    path = resolve_path(entry, path, sum(g.num_nodes for g in graphs))
    return _forward_graphs(entry, graphs, path)


def forward_graphs(entry: ModelEntry, graphs: Sequence[MolGraph], path: str) -> torch.Tensor:
    """:func:`run_graphs` on ``path`` as :func:`resolve_path` (or the cost limits) gave it
    for these graphs: the batches of a request's path, resolved once by its route."""
    return _forward_graphs(entry, _checked_graphs(entry, graphs), path)


def _checked_graphs(entry: ModelEntry, graphs: Sequence[MolGraph]) -> Sequence[MolGraph]:
    """``graphs`` as the model takes them (without bond features when it ignores them);
    ValueError naming the graph whose features do not fit."""
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
    return graphs


def _forward_graphs(entry: ModelEntry, graphs: Sequence[MolGraph], path: str) -> torch.Tensor:
    model = _loaded_model(entry)
    x, edge_index, edge_attr, batch = batch_graphs(graphs)
    if path == "onnx":
        return _run_onnx_graphs(entry, x, edge_index, edge_attr, batch, len(graphs))
    with entry.lock, torch.inference_mode(), _precision(entry):
        use_method(model, path)
        dtype = _model_dtype(model)
        out = model(
            x.to(entry.device, dtype=dtype),
            edge_index.to(entry.device),
            batch.to(entry.device),
            num_graphs=len(graphs),
            edge_attr=edge_attr.to(entry.device, dtype=dtype) if model.num_edge_features else None,
        )
        return out.float().cpu()


def _run_onnx_graphs(
    entry: ModelEntry,
    x: torch.Tensor,
    edge_index: torch.Tensor,
    edge_attr: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
) -> torch.Tensor:
    model = entry.model
    if entry.kind != "graph" or not isinstance(entry.onnx_export, dict):
        raise ValueError(f"model {entry.name!r} has no graph ONNX export")
    with entry.lock:
        return run_graph_session(
            entry.onnx_session,
            model,
            x,
            edge_index,
            batch,
            num_graphs,
            edge_attr if model.num_edge_features else None,
            squarings=int(entry.onnx_export["squarings"]),
        )
