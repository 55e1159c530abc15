"""Export a checkpoint's network to ONNX, written next to its weights, and keep it fresh.

``export_checkpoint(dir)`` writes ``<dir>/model.onnx`` and the sidecar ``model.onnx.json``
(:mod:`models.onnx.files`), which records the sha256 of the weights it was exported from, the
sha256 of the ONNX file itself and how it was exported. :func:`stale_reason` compares them
with a checkpoint, so :func:`ensure_export` re-exports after the weights change (or after the
ONNX file was modified) and reuses a fresh export otherwise.

What is exported (``torch.onnx.export`` with the TorchScript-based exporter, ``dynamo=False``:
on torch 2.13 it exports the full 12-block plstm_vis_t in about 15 s on a CPU where the dynamo
exporter needs minutes; :mod:`models.onnx.symbolics` adds or fixes the translations):

- Image models (PLSTMVision, ViT): ``images [B,C,H,W]`` float32 → ``logits [B,num_classes]``
  at the checkpoint's native resolution H×W (its input spec, else ``img_size``) with a dynamic
  batch axis. PLSTMVision runs the ``"fused"`` form (one contraction over the summed gating
  matrices of the four orientations), which agrees with every other form and runs fastest in
  ONNX Runtime. Other resolutions use the torch paths.
- PLSTMGraph: the float part of the network on per-batch index tensors (:mod:`models.onnx.graph`),
  every size dynamic, components of up to ``max_graph_nodes`` nodes.

Exports always run on a float32 CPU copy of the model (never the Triton kernel), so bf16
checkpoints export as float32. After writing, the export is run once in ONNX Runtime against
torch (:data:`EXPORT_TOLERANCE`) after ``onnx.checker`` has validated it (with full shape
inference); a mismatch is an error, not a silent bad model.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.capabilities import capabilities_of
from models.checkpoint import file_sha256, load_checkpoint
from models.graph import PLSTMGraph
from models.input_spec import native_image_size
from models.molecule_features import batch_graphs
from models.onnx.files import ONNX_FILE, read_sidecar, sidecar_path
from models.onnx.graph import (
    GRAPH_INPUTS,
    GRAPH_OUTPUT,
    PLSTMGraphOnnx,
    graph_dynamic_axes,
    graph_feeds,
    squarings_for,
)
from models.onnx.runtime import create_session, max_abs_difference, random_dag_graph
from models.onnx.symbolics import MIN_OPSET, register_symbolics

EXPORT_FORMAT = 1
"""Version of the exported inputs / outputs and sidecar; exports of another version are stale."""
DEFAULT_OPSET = 18
MAX_OPSET = 20
"""The highest opset torch's TorchScript-based exporter writes."""
GRAPH_MIN_OPSET = 18
DEFAULT_MAX_GRAPH_NODES = 512
IMAGE_INPUT = "images"
IMAGE_OUTPUT = "logits"
IMAGE_METHOD = "fused"
EXPORT_TOLERANCE = 1e-3
"""Largest max-abs difference of ONNX Runtime vs torch outputs an export may show."""


@dataclass(frozen=True)
class OnnxExport:
    """An ONNX file with its sidecar ``info``; ``reused``: found fresh, not exported now."""

    path: Path
    info: dict[str, Any]
    reused: bool = False

    @property
    def kind(self) -> str:
        return str(self.info["kind"])


def model_kind(model: nn.Module) -> str:
    """``"image"`` or ``"graph"`` (:mod:`models.capabilities`); ValueError for a network the
    exporter does not handle."""
    capabilities = capabilities_of(model)
    if capabilities is None or not capabilities.onnx:
        raise ValueError(f"ONNX export is not implemented for {type(model).__name__}")
    return capabilities.kind


def _check_opset(opset: int) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be an int in [{MIN_OPSET}, {MAX_OPSET}], got {opset!r}")


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode on the form that is exported."""
    copied = copy.deepcopy(model).to("cpu", torch.float32).eval()
    method = _exported_method(copied)
    if method is not None:
        copied.set_method(method)  # type: ignore[operator]
    return copied


def _exported_method(model: nn.Module) -> str | None:
    """The method an export traces for a model with several: the summed-gating form for
    images (:data:`IMAGE_METHOD`), the parallel form for graphs; None for a single one."""
    capabilities = capabilities_of(model)
    if capabilities is None or len(capabilities.methods) == 1:
        return None
    return IMAGE_METHOD if capabilities.kind == "image" else "parallel"


def example_graph_batch(
    num_node_features: int, num_edge_features: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """A small batch with fan-in, fan-out, three graphs and a bond-less node: x ``[N,F]``,
    edge_index, edge_attr ``[E,Fe]``, batch, num_graphs (the export example)."""
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.tensor([[0, 0, 1, 2, 3, 5, 6], [1, 2, 3, 3, 4, 6, 7]])
    batch = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2])
    x = torch.rand(9, num_node_features, generator=gen)
    edge_attr = torch.rand(edge_index.shape[1], num_edge_features, generator=gen)
    return x, edge_index, edge_attr, batch, 3


@dataclass
class _Trace:
    """What one export traces and checks: ``module(*args)`` with names and dynamic axes, and
    ``checks`` (ONNX feeds, expected torch outputs); ``info`` goes to the sidecar."""

    module: nn.Module
    args: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    checks: list[tuple[dict[str, torch.Tensor], torch.Tensor]]
    info: dict[str, Any]


def _image_trace(model: nn.Module, input_spec: Any) -> _Trace:
    """An image model at its native size, batch axis free (traced with 2 images, checked on
    2 and on 1)."""
    height, width = native_image_size(input_spec, model.config)  # type: ignore[arg-type]
    chans = int(model.config["in_chans"])  # type: ignore[index]
    gen = torch.Generator().manual_seed(0)
    checks = []
    for batch in (2, 1):
        images = torch.rand(batch, chans, height, width, generator=gen)
        with torch.inference_mode():
            checks.append(({IMAGE_INPUT: images}, model(images)))
    info: dict[str, Any] = {"image_size": [height, width], "channels": chans}
    if _exported_method(model) is not None:
        info["method"] = IMAGE_METHOD
    return _Trace(
        module=model,
        args=(checks[0][0][IMAGE_INPUT],),
        input_names=[IMAGE_INPUT],
        output_names=[IMAGE_OUTPUT],
        dynamic_axes={IMAGE_INPUT: {0: "batch"}, IMAGE_OUTPUT: {0: "batch"}},
        checks=checks,
        info=info,
    )


def _graph_trace(model: PLSTMGraph, max_graph_nodes: int) -> _Trace:
    """A graph model on index feeds (traced on :func:`example_graph_batch`, checked on it and
    on random DAGs of other sizes)."""
    squarings = squarings_for(max_graph_nodes)
    rng = np.random.default_rng(0)
    features = (model.num_node_features, max(model.num_edge_features, 1))
    dags = [random_dag_graph(rng, n, *features) for n in (11, 1, 6)]
    x, edge_index, edge_attr, batch = batch_graphs(dags)
    batches = [
        example_graph_batch(model.num_node_features, model.num_edge_features),
        (x, edge_index, edge_attr[:, : model.num_edge_features], batch, len(dags)),
    ]
    checks = []
    for x, edge_index, edge_attr, batch, num_graphs in batches:
        attr = edge_attr if model.num_edge_features else None
        feeds = graph_feeds(model, x, edge_index, batch, num_graphs, attr, squarings=squarings)
        with torch.inference_mode():
            expected = model(x, edge_index, batch, num_graphs=num_graphs, edge_attr=attr)
        checks.append((feeds, expected))
    return _Trace(
        module=PLSTMGraphOnnx(model, squarings),
        args=tuple(checks[0][0][name] for name in GRAPH_INPUTS),
        input_names=list(GRAPH_INPUTS),
        output_names=[GRAPH_OUTPUT],
        dynamic_axes=graph_dynamic_axes(),
        checks=checks,
        info={"max_graph_nodes": 2**squarings, "squarings": squarings},
    )


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a uniquely named temporary file in ``path``'s directory, then rename (safe
    when several server workers export the same checkpoint at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _torch_export(trace: _Trace, path: Path, opset: int) -> None:
    register_symbolics()
    with warnings.catch_warnings(), torch.no_grad():
        # tracing warns about every size turned into a constant and about the exporter's
        # deprecation; the export is checked against torch right after
        warnings.simplefilter("ignore")
        torch.onnx.export(
            trace.module,
            trace.args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=trace.input_names,
            output_names=trace.output_names,
            dynamic_axes=trace.dynamic_axes,
            do_constant_folding=True,
        )


def _export_and_check(trace: _Trace, path: Path, opset: int, architecture: str) -> float:
    """Export to ``path``, validate it with ``onnx.checker`` and run the checks in ONNX
    Runtime; the max abs difference, or ValueError."""
    import onnx

    try:
        _torch_export(trace, path, opset)
    except (RuntimeError, TypeError) as exc:  # OnnxExporterError is a RuntimeError
        raise ValueError(f"ONNX export of {architecture} failed: {exc}") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValueError(f"ONNX export of {architecture} is not a valid model: {exc}") from exc
    session = create_session(path, providers=["CPUExecutionProvider"])
    diff = max(max_abs_difference(session, feeds, out) for feeds, out in trace.checks)
    if not diff <= EXPORT_TOLERANCE:
        raise ValueError(
            f"ONNX export of {architecture} disagrees with torch: max abs difference "
            f"{diff:.3g} > {EXPORT_TOLERANCE}"
        )
    return diff


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    architecture: str,
    weights_sha256: str,
    input_spec: Any = None,
    opset: int = DEFAULT_OPSET,
    max_graph_nodes: int = DEFAULT_MAX_GRAPH_NODES,
) -> OnnxExport:
    """Export ``model`` (a float32 CPU copy of it; ``model`` is not changed) to ``path`` and
    write the sidecar; both atomically. ``weights_sha256`` is recorded as the weights it was
    exported from, ``input_spec`` gives image models their native size, graph exports handle
    components of up to ``max_graph_nodes`` nodes. The export is validated and run in ONNX
    Runtime against torch; ValueError when it differs by more than :data:`EXPORT_TOLERANCE`
    or the network cannot be exported."""
    _check_opset(opset)
    kind = model_kind(model)
    if kind == "graph" and opset < GRAPH_MIN_OPSET:
        raise ValueError(
            f"graph models need opset >= {GRAPH_MIN_OPSET} (ScatterElements with max "
            f"reduction, for the P-mode softmax), got {opset}"
        )
    copied = _cpu_copy(model)
    if kind == "graph":
        trace = _graph_trace(copied, max_graph_nodes)  # type: ignore[arg-type]
    else:
        trace = _image_trace(copied, input_spec)
    path = Path(path)
    diff: list[float] = []
    _write_atomic(path, lambda tmp: diff.append(_export_and_check(trace, tmp, opset, architecture)))
    info = {
        "format": EXPORT_FORMAT,
        "kind": kind,
        "architecture": architecture,
        "weights_sha256": weights_sha256,
        "onnx_sha256": file_sha256(path),
        "opset": opset,
        "inputs": trace.input_names,
        "outputs": trace.output_names,
        **trace.info,
        "check_max_abs_diff": diff[0],
        "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
        "torch_version": torch.__version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(info, indent=2, allow_nan=False) + "\n"
    _write_atomic(sidecar_path(path), lambda tmp: tmp.write_text(text))
    return OnnxExport(path, info)


def export_checkpoint(
    checkpoint_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    max_graph_nodes: int = DEFAULT_MAX_GRAPH_NODES,
) -> OnnxExport:
    """Load a checkpoint (sha256-verified, on the CPU) and export it to ``out`` (default
    ``<checkpoint_dir>/model.onnx``), see :func:`export_model`."""
    checkpoint = load_checkpoint(checkpoint_dir, device="cpu")
    return export_model(
        checkpoint.model,
        Path(checkpoint_dir) / ONNX_FILE if out is None else out,
        architecture=checkpoint.architecture,
        weights_sha256=checkpoint.weights_sha256,
        input_spec=checkpoint.input_spec,
        opset=opset,
        max_graph_nodes=max_graph_nodes,
    )


def stale_reason(
    onnx_path: str | os.PathLike,
    weights_sha256: str,
    *,
    opset: int | None = None,
    max_graph_nodes: int | None = None,
) -> str | None:
    """None when ``onnx_path`` is a fresh export of the weights with sha256 ``weights_sha256``
    (and, when given, of that ``opset`` and for graph components of ``max_graph_nodes``
    nodes); else why it is not."""
    path = Path(onnx_path)
    if not path.is_file():
        return f"{path} does not exist"
    info = read_sidecar(path)
    if info is None:
        return f"{sidecar_path(path)} is missing or unreadable"
    if info.get("format") != EXPORT_FORMAT:
        return f"export format {info.get('format')!r}, expected {EXPORT_FORMAT}"
    if info.get("weights_sha256") != weights_sha256:
        return "exported from other weights (weights sha256 differs)"
    if file_sha256(path) != info.get("onnx_sha256"):
        return f"{path} was modified after the export (sha256 differs)"
    if opset is not None and info.get("opset") != opset:
        return f"exported with opset {info.get('opset')}, {opset} requested"
    if (
        info.get("kind") == "graph"
        and max_graph_nodes is not None
        and int(info.get("max_graph_nodes", 0)) < max_graph_nodes
    ):
        return (
            f"exported for graph components of up to {info.get('max_graph_nodes')} nodes, "
            f"{max_graph_nodes} needed"
        )
    return None


def ensure_export(
    checkpoint_dir: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    out: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    max_graph_nodes: int = DEFAULT_MAX_GRAPH_NODES,
) -> OnnxExport:
    """The ONNX export of a checkpoint at ``out`` (default ``<checkpoint_dir>/model.onnx``):
    reused when :func:`stale_reason` finds it fresh, else exported now. ``model`` is the
    checkpoint's already-loaded network (on any device), saving a second load."""
    from models.checkpoint import read_checkpoint_metadata

    path = Path(checkpoint_dir) / ONNX_FILE if out is None else Path(out)
    document = read_checkpoint_metadata(checkpoint_dir)
    sha = document["weights_sha256"]
    if stale_reason(path, sha, opset=opset, max_graph_nodes=max_graph_nodes) is None:
        info = read_sidecar(path)
        assert info is not None
        return OnnxExport(path, info, reused=True)
    if model is None:
        return export_checkpoint(checkpoint_dir, path, opset=opset, max_graph_nodes=max_graph_nodes)
    return export_model(
        model,
        path,
        architecture=document["architecture"],
        weights_sha256=sha,
        input_spec=document.get("input"),
        opset=opset,
        max_graph_nodes=max_graph_nodes,
    )
