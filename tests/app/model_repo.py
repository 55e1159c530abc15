"""A tiny model repository for the server tests: ``vis`` (PLSTMVision image classifier,
grayscale arrow-style preprocessing as training records it), ``mol`` (PLSTMGraph solubility
classifier) and ``solreg`` (PLSTMGraph regression)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.checkpoint import save_checkpoint
from models.image_spec import grayscale_image_spec
from models.molecule_features import NUM_EDGE_FEATURES, NUM_NODE_FEATURES
from models.registry import create_model

IMG = 16
PATCH = 4
VIS_LABELS = ["not_pointing", "pointing"]
SOL_LABELS = ["low", "medium", "high"]
METRICS = {"test": {"dataset": "arrow-pointing", "split": "test", "seed": 0, "accuracy": 0.75}}


def make_repository(root: Path) -> Path:
    torch.manual_seed(0)
    vis = create_model(
        "plstm_vis_t",
        img_size=IMG,
        patch_size=PATCH,
        in_chans=3,
        num_classes=2,
        dim=16,
        depth=2,
        num_heads=2,
        chunk_size=2,
    )
    input_spec, preprocessing = grayscale_image_spec(IMG, PATCH)
    save_checkpoint(
        vis,
        root / "vis" / "1",
        name="plstm_vis_t",
        labels=VIS_LABELS,
        metrics=METRICS,
        input_spec=input_spec,
        preprocessing=preprocessing,
    )
    graph = {
        "num_node_features": NUM_NODE_FEATURES,
        "num_edge_features": NUM_EDGE_FEATURES,
        "dim": 16,
        "depth": 2,
        "num_heads": 2,
    }
    spec = {
        "kind": "molecule",
        "formats": ["smiles", "atoms_bonds"],
        "num_node_features": NUM_NODE_FEATURES,
        "num_edge_features": NUM_EDGE_FEATURES,
    }
    mol = create_model("plstm_graph", num_classes=3, task="classification", **graph)
    save_checkpoint(
        mol,
        root / "mol" / "1",
        name="plstm_graph",
        labels=SOL_LABELS,
        input_spec=spec,
        preprocessing={"featurizer": "models.molecule_features"},
    )
    reg = create_model("plstm_graph", num_classes=1, task="regression", **graph)
    save_checkpoint(
        reg,
        root / "solreg" / "1",
        name="plstm_graph",
        labels=["log_solubility"],
        input_spec=spec,
        preprocessing={"featurizer": "models.molecule_features"},
    )
    return root


def png_bytes(height: int, width: int, seed: int, mode: str = "RGB") -> bytes:
    """A random image encoded as PNG."""
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    image = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def blank_png(side: int) -> bytes:
    """A white square image encoded as PNG (a few KB at any size)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def mixed_requests() -> list[dict[str, Any]]:
    """Requests of every endpoint on the repository of :func:`make_repository`, answered 200,
    400, 404, 413, 415 and 422: for comparing two ways of serving it (both with the same
    ``PLSTM_MAX_REQUEST_MEMORY_MB``, which the 413 answers name)."""
    gen = torch.Generator().manual_seed(11)
    images = torch.rand(2, 3, IMG, IMG, generator=gen)
    smiles = {"name": "smiles", "shape": [2], "datatype": "BYTES", "data": ["CCO", "CCN"]}
    floats = {"name": "images", "shape": [2, 3, IMG, IMG], "datatype": "FP32"}
    png = {"content-type": "image/png"}
    classify = "/v1/models/vis/classify"
    return [
        {"method": "GET", "url": "/v1/models"},
        {"method": "GET", "url": "/v1/models/vis"},
        {"method": "GET", "url": "/v1/models/mol", "params": {"version": 1}},
        {"method": "GET", "url": "/v1/models/nope"},
        {"method": "GET", "url": "/v2/models/vis"},
        {"method": "GET", "url": "/v2/models/solreg"},
        {"method": "GET", "url": "/v2/models/vis/versions/3"},
        {"method": "GET", "url": "/v2/models/mol/ready"},
        {"method": "GET", "url": "/v2/health/ready"},
        {"method": "POST", "url": classify, "files": {"image": ("a.png", png_bytes(IMG, IMG, 1))}},
        {
            "method": "POST",
            "url": classify,
            "params": {"path": "recurrent", "top_k": 1},
            "content": png_bytes(IMG, IMG, 2),
            "headers": png,
        },
        {
            "method": "POST",
            "url": classify,
            "params": {"path": "chunkwise", "resize": "native"},
            "content": png_bytes(20, 24, 3),
            "headers": png,
        },
        {  # 200x200 patches: the parallel form needs ~200 GB
            "method": "POST",
            "url": classify,
            "params": {"path": "parallel", "resize": "native"},
            "content": blank_png(800),
            "headers": png,
        },
        {  # 275x275 patches: more than PLSTM_MAX_TOKENS
            "method": "POST",
            "url": classify,
            "params": {"resize": "native"},
            "content": blank_png(1100),
            "headers": png,
        },
        {"method": "POST", "url": classify, "content": b"\x89PNG-broken", "headers": png},
        {"method": "POST", "url": classify, "content": b"hi", "headers": {"content-type": "a/b"}},
        {
            "method": "POST",
            "url": classify,
            "params": {"path": "onnx"},
            "content": png_bytes(IMG, IMG, 4),
            "headers": png,
        },
        {"method": "POST", "url": "/v1/models/nope/classify", "content": png_bytes(IMG, IMG, 5)},
        {
            "method": "POST",
            "url": "/v1/models/mol/classify",
            "content": png_bytes(IMG, IMG, 6),
            "headers": png,
        },
        {
            "method": "POST",
            "url": "/v1/models/mol/predict",
            "json": {"graphs": [{"smiles": "CCO"}, {"smiles": "c1ccccc1O"}]},
        },
        {
            "method": "POST",
            "url": "/v1/models/solreg/predict",
            "params": {"path": "recurrent"},
            "json": {"graphs": [{"smiles": "CC(=O)O"}]},
        },
        {
            "method": "POST",
            "url": "/v1/models/mol/predict",
            "json": {"graphs": [{"smiles": "C(("}]},
        },
        {
            "method": "POST",
            "url": "/v2/models/vis/infer",
            "json": {"inputs": [{**floats, "data": images.flatten().tolist()}]},
        },
        {"method": "POST", "url": "/v2/models/mol/infer", "json": {"inputs": [smiles]}},
        {"method": "POST", "url": "/v2/models/vis/infer", "json": {"inputs": [smiles]}},
    ]
