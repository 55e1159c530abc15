"""A tiny model repository for the server tests: ``vis`` (PLSTMVision image classifier,
grayscale arrow-style preprocessing as training records it), ``mol`` (PLSTMGraph solubility
classifier) and ``solreg`` (PLSTMGraph regression)."""

from __future__ import annotations

import io
from pathlib import Path

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
