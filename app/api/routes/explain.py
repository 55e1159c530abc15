"""Explanation routes: ``POST /v1/models/{name}/explain`` (what each image patch or atom
contributes to the model's answer, :mod:`app.serving.explanations`) and ``POST /v1/molecules/draw``
(an RDKit drawing of a molecule, atoms optionally coloured)."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
import torch
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.api.dependencies import ApiKey, SettingsDep
from app.api.handlers.images import load_upload
from app.api.handlers.outputs import labels, ranked, timings
from app.api.molecule_drawing import Molecule, draw_svg, molecule_from_input
from app.api.molecules import molecule_limits
from app.api.openapi import error_responses
from app.api.routes.common import ModelName, VersionQuery, find_runtime, inflight, resolve_path
from app.api.routes.v1 import CLASSIFY_BODY
from app.api.schemas.common import ImageSize, validation_error_message
from app.api.schemas.explain import (
    AtomContribution,
    DrawRequest,
    ExplainedOutput,
    Explanation,
    ImageExplanation,
    MoleculeExplanation,
)
from app.api.schemas.v1 import GraphInput, RegressionValue
from app.core.errors import ApiError
from app.core.settings import Settings
from app.serving import backends
from app.serving.explanations import Explained, ExplainRequest, explain
from app.serving.repository import ModelEntry
from app.serving.runtime import Runtime

MAX_STEPS = 32
ExplainPath = Literal["auto", "parallel", "recurrent", "chunkwise"]
SVG = "image/svg+xml"

ERRORS = error_responses(400, 404, 408, 413, 415, 422, 431, 503, 504)
router = APIRouter(prefix="/v1", tags=["explanations"], dependencies=[ApiKey], responses=ERRORS)

_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "Image models: the image as for classify, a multipart field `image` or a "
    "raw image body (PNG, JPEG, WebP, BMP). Molecule models: one molecule as JSON, "
    '`{"smiles": "CCO"}` or `{"atoms": [...], "bonds": [[0, 1, 1]]}`.',
    "content": {
        **CLASSIFY_BODY["requestBody"]["content"],
        "application/json": {
            "schema": {"$ref": "#/components/schemas/GraphInput"},
            "example": {"smiles": "c1ccccc1O"},
        },
    },
}


def _target(target: str | None, entry: ModelEntry, count: int) -> int | None:
    """The output index ``target`` names (a label or an index); None: the model's answer
    (the predicted class; the first output of a regression model)."""
    if target is None:
        return 0 if entry.config.get("task") == "regression" else None
    names = labels(entry, count)
    if target in names:
        return names.index(target)
    if target.isdecimal() and int(target) < count:
        return int(target)
    raise ApiError(
        422,
        f"target: {target!r} is neither a label of model {entry.name!r} "
        f"({', '.join(names)}) nor an output index below {count}",
    )


def _path(entry: ModelEntry, path: str, tokens: int) -> str:
    """The explicit torch path for ``path``: ``auto`` is chunkwise for images of more than
    :func:`~app.serving.backends.auto_chunkwise_limit` patches (with autograd; where the model
    has it), else parallel; never onnx."""
    if path != "auto":
        return resolve_path(entry, path, tokens, status=422, field="path")
    limit = backends.auto_chunkwise_limit(entry.device, autograd=True)
    if "chunkwise" in backends.model_paths(entry) and tokens > limit:
        return "chunkwise"
    return "parallel"


def _explained_output(
    explained: Explained, names: list[str], probabilities: torch.Tensor | None
) -> ExplainedOutput:
    t = explained.target
    return ExplainedOutput(
        label=names[t],
        index=t,
        output=float(explained.outputs[t]),
        baseline_output=float(explained.baseline_outputs[t]),
        probability=None if probabilities is None else min(1.0, float(probabilities[t])),
    )


def _method(steps: int) -> Literal["gradient_x_input", "integrated_gradients"]:
    return "gradient_x_input" if steps == 1 else "integrated_gradients"


async def _read_molecule(request: Request, settings: Settings) -> Molecule:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise ApiError(
            415,
            f"unsupported content type {kind or 'none'!r}: molecule models take one molecule "
            'as JSON, e.g. {"smiles": "CCO"}',
        )
    try:
        graph = GraphInput.model_validate_json(await request.body())
    except ValidationError as exc:
        raise ApiError(422, validation_error_message(exc.errors())) from None
    read = partial(molecule_from_input, graph, molecule_limits(settings))
    return await anyio.to_thread.run_sync(read)


@router.post(
    "/models/{name}/explain",
    response_model=Explanation,
    summary="Explain a model's answer: what each image patch or atom contributes",
    description="Runs the model on the input as classify (images) or predict (one molecule) "
    "do and answers, with the predictions, the contribution of every image patch or atom to "
    "one output (`target`): gradient × (input − baseline), or integrated gradients with "
    "`steps` > 1. The baseline is a blank white image, or the molecule with featureless "
    "atoms. Costs a forward and a backward pass of `steps` inputs and a forward pass of the "
    "baseline; images may cover at most PLSTM_MAX_EXPLAIN_PATCHES patches × (steps + 1). "
    "Molecule answers carry an RDKit "
    "drawing with the atoms coloured.",
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def explain_route(
    request: Request,
    name: ModelName,
    settings: SettingsDep,
    target: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="Output to explain: a label or an output index. Default: the "
            "predicted class (classification), the first output (regression).",
        ),
    ] = None,
    path: Annotated[
        ExplainPath, Query(description="Inference path; auto lets the server pick (not onnx).")
    ] = "auto",
    resize: Annotated[
        Literal["model", "native"],
        Query(
            description="Images: model resizes to the training size, native pads to the patch grid."
        ),
    ] = "model",
    steps: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_STEPS,
            description="1: gradient × input; more: integrated gradients with this many points.",
        ),
    ] = 1,
    version: VersionQuery = None,
) -> ImageExplanation | MoleculeExplanation:
    start = time.perf_counter()
    runtime = find_runtime(request, name, version)
    entry = runtime.entry
    index = _target(target, entry, int(entry.config["num_classes"]))
    with inflight(request, name):
        if entry.kind == "image":
            return await _explain_image(
                request, runtime, settings, index, path, resize, steps, start
            )
        molecule = await _read_molecule(request, settings)
        chosen = _path(entry, path, molecule.graph.num_nodes)
        item = ExplainRequest(molecule.graph, chosen, steps, index)
        explained = await explain(request.app.state.explainers, runtime, item)
    return await anyio.to_thread.run_sync(
        _molecule_explanation, entry, molecule, explained, chosen, steps, start
    )


async def _explain_image(
    request: Request,
    runtime: Runtime,
    settings: Settings,
    index: int | None,
    path: str,
    resize: Literal["model", "native"],
    steps: int,
    start: float,
) -> ImageExplanation:
    entry, spec = runtime.entry, runtime.spec
    assert spec is not None  # every image runtime has one
    prepared = await load_upload(request, runtime, settings, resize)
    height, width = prepared.size
    tokens = backends.image_tokens(entry, height, width)
    if tokens * (steps + 1) > settings.max_explain_patches:
        raise ApiError(
            422,
            f"image: {int(tokens)} patches x (steps {steps} + 1) exceed the limit of "
            f"{settings.max_explain_patches} patches per explanation: use resize=model or "
            "fewer steps",
        )
    chosen = _path(entry, path, tokens)
    item = ExplainRequest(prepared.tensor, chosen, steps, index)
    explained = await explain(request.app.state.explainers, runtime, item)
    count = int(entry.config["num_classes"])
    names = labels(entry, count)
    probabilities = explained.outputs.softmax(-1)
    return ImageExplanation(
        kind="image",
        model=entry.name,
        version=str(entry.version),
        path=chosen,
        method=_method(steps),
        steps=steps,
        target=_explained_output(explained, names, probabilities),
        predictions=ranked(probabilities, names, count),
        resize=resize,
        image_size=ImageSize(height=height, width=width),
        original_size=ImageSize(height=prepared.original_size[0], width=prepared.original_size[1]),
        patch_size=spec.patch_size,
        contributions=explained.contributions.tolist(),
        timings=timings(explained.queue_s, explained.inference_s, start),
    )


def _molecule_explanation(
    entry: ModelEntry,
    molecule: Molecule,
    explained: Explained,
    path: str,
    steps: int,
    start: float,
) -> MoleculeExplanation:
    """The answer for a molecule model, with the drawing (RDKit: run off the event loop)."""
    count = int(entry.config["num_classes"])
    names = labels(entry, count)
    regression = entry.config.get("task") == "regression"
    probabilities = None if regression else explained.outputs.softmax(-1)
    by_node = explained.contributions.tolist()
    atoms = [
        AtomContribution(
            index=i, element=atom.GetSymbol(), contribution=by_node[molecule.node_of_atom[i]]
        )
        for i, atom in enumerate(molecule.mol.GetAtoms())
    ]
    values = [
        RegressionValue(name=n, value=v)
        for n, v in zip(names, explained.outputs.tolist(), strict=True)
    ]
    return MoleculeExplanation(
        kind="graph",
        model=entry.name,
        version=str(entry.version),
        path=path,
        method=_method(steps),
        steps=steps,
        task="regression" if regression else "classification",
        target=_explained_output(explained, names, probabilities),
        predictions=None if probabilities is None else ranked(probabilities, names, count),
        values=values if regression else None,
        smiles=molecule.smiles,
        atoms=atoms,
        svg=draw_svg(molecule.mol, [a.contribution for a in atoms]),
        timings=timings(explained.queue_s, explained.inference_s, start),
    )


@router.post(
    "/molecules/draw",
    response_class=Response,
    summary="Draw a molecule (SVG), atoms optionally coloured by weights",
    responses={
        200: {
            "description": "The RDKit drawing.",
            "content": {SVG: {"schema": {"type": "string"}}},
        }
    },
)
async def draw_molecule(body: DrawRequest, settings: SettingsDep) -> Response:
    def render() -> str:
        molecule = molecule_from_input(body, molecule_limits(settings))
        try:
            return draw_svg(molecule.mol, body.weights, width=body.width, height=body.height)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None

    svg = await anyio.to_thread.run_sync(render)
    return Response(svg, media_type=SVG)
