"""Schemathesis hooks for the repository of :func:`tests.app.model_repo.make_repository`
(loaded by the CLI through ``SCHEMATHESIS_HOOKS``; see ``test_openapi_schemathesis.py``).

The OpenAPI document states every constraint JSON Schema can express; what it cannot is
supplied here, for schema-valid (positive) cases only, so that a valid request is one the
server must accept:

- image bodies (raw ``image/*`` and the multipart field ``image``) are real encoded images of
  a random size and content (:func:`images`);
- a positive case names a served model of the kind its route takes (most of the time; other
  names stay, and are answered 404), a version that exists, and an inference path that model
  offers;
- molecule bodies hold valid molecules (SMILES, or the same molecules as atoms and bonds), and
  OIP tensors hold as many elements as their shape says, of the model's input;
- explanations name a model that takes their body (an image model for image bodies, a molecule
  model for JSON) and an output index it has; drawings carry no weights.

Negative cases are left alone: the server must reject them.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/bmp": "BMP"}
IMAGE_MODELS = ("vis",)
GRAPH_MODELS = ("mol", "solreg")
OUTPUTS = {
    "vis": ["probabilities", "logits"],
    "mol": ["probabilities", "logits"],
    "solreg": ["values"],
}
PATHS = {
    "vis": ("auto", "parallel", "recurrent", "chunkwise"),
    "mol": ("auto", "parallel", "recurrent"),
}
PATHS["solreg"] = PATHS["mol"]
IMG = 16
MOLECULES = [
    ("CCO", ["C", "C", "O"], [[0, 1, 1], [1, 2, 1]]),
    ("c1ccccc1O", ["C"] * 6 + ["O"], [[i, (i + 1) % 6, 1.5] for i in range(6)] + [[0, 6, 1]]),
    ("CC(=O)O", ["C", "C", "O", "O"], [[0, 1, 1], [1, 2, 2], [1, 3, 1]]),
    ("C#N", ["C", "N"], [[0, 1, 3]]),
    ("[NH4+]", [{"element": "N", "charge": 1, "hydrogens": 4}], []),
]


def _image(size: tuple[int, int], seed: int, media_type: str, gray: bool) -> bytes:
    height, width = size
    rng = np.random.default_rng(seed)
    shape = (height, width) if gray else (height, width, 3)
    image = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=IMAGE_FORMATS.get(media_type, "PNG"))
    return buffer.getvalue()


def images(media_type: str) -> st.SearchStrategy[bytes]:
    """Encoded images of ``media_type`` (PNG for octet-stream), 4 to 48 pixels a side."""
    sizes = st.tuples(st.integers(4, 48), st.integers(4, 48))
    return st.builds(_image, sizes, st.integers(0, 2**16), st.just(media_type), st.booleans())


for _media_type in (*IMAGE_FORMATS, "application/octet-stream"):
    schemathesis.openapi.media_type(_media_type, images(_media_type))


def _pick(value: Any, choices: tuple[str, ...] | list[str]) -> Any:
    """A deterministic choice among ``choices`` driven by the generated ``value``."""
    return choices[zlib.crc32(repr(value).encode()) % len(choices)]


def _model(name: Any, served: tuple[str, ...]) -> Any:
    """One of the ``served`` models for three generated names in four, and for a model of the
    other kind; the generated name (answered 404) else."""
    if (name in OUTPUTS and name not in served) or zlib.crc32(repr(name).encode()) % 4:
        return _pick(name, served)
    return name


def _molecule(graph: Any) -> dict[str, Any]:
    smiles, atoms, bonds = _pick(graph, MOLECULES)
    if isinstance(graph, dict) and "atoms" in graph:
        return {"atoms": atoms, "bonds": bonds}
    return {"smiles": smiles}


def _tensor(model: str, seed: Any) -> dict[str, Any]:
    batch = 1 + zlib.crc32(repr(seed).encode()) % 2
    if model in IMAGE_MODELS:
        rng = np.random.default_rng(zlib.crc32(repr(seed).encode()))
        data = rng.random(batch * 3 * IMG * IMG).round(4).tolist()
        return {"name": "images", "datatype": "FP32", "shape": [batch, 3, IMG, IMG], "data": data}
    smiles = [_pick((seed, i), MOLECULES)[0] for i in range(batch)]
    return {"name": "smiles", "datatype": "BYTES", "shape": [batch], "data": smiles}


def _inference_body(body: Any, model: str) -> dict[str, Any]:
    body = body if isinstance(body, dict) else {}
    fixed: dict[str, Any] = {"inputs": [_tensor(model, body.get("inputs"))]}
    if isinstance(body.get("id"), str):
        fixed["id"] = body["id"]
    if body.get("outputs") is not None:
        fixed["outputs"] = [{"name": _pick(body["outputs"], OUTPUTS[model])}]
    fixed["parameters"] = {"path": _pick(body.get("parameters"), PATHS[model])}
    return fixed


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    route = case.operation.path
    params = case.path_parameters
    if "version" in params:
        params["version"] = "1"
    if "version" in case.query:
        case.query["version"] = 1
    served = GRAPH_MODELS if route.endswith("/predict") else IMAGE_MODELS
    if route.endswith(("/classify", "/predict")):
        params["name"] = _model(params.get("name"), served)
        if "path" in case.query:
            case.query["path"] = _pick(case.query["path"], PATHS[served[0]])
    if route.endswith("/predict") and isinstance(case.body, dict):
        case.body = {"graphs": [_molecule(g) for g in case.body.get("graphs") or [{}]]}
    elif route.endswith("/explain"):
        molecule = case.media_type == "application/json"
        params["name"] = _model(params.get("name"), GRAPH_MODELS if molecule else IMAGE_MODELS)
        if molecule:
            case.body = _molecule(case.body)
        if "path" in case.query:
            case.query["path"] = _pick(case.query["path"], PATHS.get(params["name"], ("auto",)))
        if "target" in case.query:
            case.query["target"] = "0"
    elif route == "/v1/molecules/draw" and isinstance(case.body, dict):
        sizes = {k: case.body[k] for k in ("width", "height") if k in case.body}
        case.body = {**_molecule(case.body), **sizes}
    elif route.endswith("/infer"):
        params["name"] = _model(params.get("name"), IMAGE_MODELS + GRAPH_MODELS)
        if params["name"] in OUTPUTS:
            case.body = _inference_body(case.body, params["name"])
    elif "name" in params:
        params["name"] = _model(params.get("name"), IMAGE_MODELS + GRAPH_MODELS)
    case.path_parameters = params
    return case
