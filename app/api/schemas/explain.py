"""JSON bodies of the explanation endpoints: ``POST /v1/models/{name}/explain`` (answers
:class:`ImageExplanation` or :class:`MoleculeExplanation`) and ``POST /v1/molecules/draw``
(takes :class:`DrawRequest`). Every field carries a description and every model an example,
so ``/docs`` documents them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import ImageSize, Prediction, Timings
from app.api.schemas.v1 import GraphInput, RegressionValue

METHODS = ("gradient_x_input", "integrated_gradients")
Method = Literal["gradient_x_input", "integrated_gradients"]
METHOD_DESCRIPTION = (
    "gradient_x_input (steps = 1): gradient of the explained output times (input − "
    "baseline); integrated_gradients (steps > 1): the gradient averaged over steps points on "
    "the straight path from the baseline to the input, so the contributions add up to "
    "output − baseline_output."
)


def _example(**example: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


class ExplainedOutput(BaseModel):
    """The output an explanation is about."""

    model_config = _example(
        label="pointing", index=1, output=4.2, baseline_output=-2.3, probability=0.999
    )
    label: str = Field(description="Class or regression target name.")
    index: int = Field(ge=0, description="Output position of the model.")
    output: float = Field(description="The output (logit, or regression value) for the input.")
    baseline_output: float = Field(
        description="The same output for the baseline (a blank white image; a molecule whose "
        "atoms have no features)."
    )
    probability: float | None = Field(
        default=None, ge=0, le=1, description="Softmax probability (classification only)."
    )


_IMAGE_EXAMPLE: dict[str, Any] = dict(
    kind="image",
    model="arrow-pointing",
    version="1",
    path="parallel",
    method="gradient_x_input",
    steps=1,
    target={
        "label": "pointing",
        "index": 1,
        "output": 4.2,
        "baseline_output": -2.3,
        "probability": 0.999,
    },
    predictions=[
        {"label": "pointing", "index": 1, "probability": 0.999},
        {"label": "not_pointing", "index": 0, "probability": 0.001},
    ],
    resize="model",
    image_size={"height": 16, "width": 16},
    original_size={"height": 96, "width": 96},
    patch_size=8,
    contributions=[[0.0, 1.3], [-0.4, 0.0]],
    timings={"queue_ms": 0.1, "inference_ms": 80.0, "total_ms": 83.0},
)


class ImageExplanation(BaseModel):
    """How much each patch of an image contributes to one output of an image model."""

    model_config = _example(**_IMAGE_EXAMPLE)
    kind: Literal["image"] = Field(description="The model takes images.")
    model: str = Field(description="Model name.")
    version: str = Field(description="Model version that answered.")
    path: str = Field(description="Inference path the gradients ran through.")
    method: Method = Field(description=METHOD_DESCRIPTION)
    steps: int = Field(ge=1, description="Points of the path the gradient was taken at.")
    target: ExplainedOutput = Field(description="The explained output.")
    predictions: list[Prediction] = Field(description="Every class, most probable first.")
    resize: Literal["model", "native"] = Field(
        description="model: resized to the training size; native: padded to the patch grid."
    )
    image_size: ImageSize = Field(description="Size of the tensor fed to the model.")
    original_size: ImageSize = Field(description="Size of the uploaded image (upright).")
    patch_size: int = Field(ge=1, description="Side of a patch in pixels of image_size.")
    contributions: list[list[float]] = Field(
        description="Contribution of every patch to the explained output: one row per patch "
        "row (image_size.height / patch_size rows, top first), one value per patch column "
        "(left first). Positive values push the output up, negative ones down; patches "
        "equal to the baseline (blank white) contribute 0."
    )
    timings: Timings = Field(description="Server-side durations.")


class AtomContribution(BaseModel):
    """One atom of an explained molecule."""

    model_config = _example(index=2, element="O", contribution=0.41)
    index: int = Field(
        ge=0,
        description="Heavy-atom index: position in the SMILES or atoms list, hydrogens "
        "skipped (RDKit's atom index of the drawn molecule).",
    )
    element: str = Field(description="Element symbol.")
    contribution: float = Field(description="Contribution to the explained output.")


class MoleculeExplanation(BaseModel):
    """How much each atom contributes to one output of a molecule model."""

    model_config = _example(
        kind="graph",
        model="solubility",
        version="1",
        path="parallel",
        method="gradient_x_input",
        steps=1,
        task="classification",
        target={
            "label": "high",
            "index": 2,
            "output": 1.9,
            "baseline_output": 0.2,
            "probability": 0.93,
        },
        predictions=[{"label": "high", "index": 2, "probability": 0.93}],
        values=None,
        smiles="CCO",
        atoms=[{"index": 0, "element": "C", "contribution": -0.1}],
        svg="<svg ...>...</svg>",
        timings={"queue_ms": 0.1, "inference_ms": 12.0, "total_ms": 15.0},
    )
    kind: Literal["graph"] = Field(description="The model takes molecules.")
    model: str = Field(description="Model name.")
    version: str = Field(description="Model version that answered.")
    path: str = Field(description="Inference path the gradients ran through.")
    method: Method = Field(description=METHOD_DESCRIPTION)
    steps: int = Field(ge=1, description="Points of the path the gradient was taken at.")
    task: Literal["classification", "regression"] = Field(description="Output kind.")
    target: ExplainedOutput = Field(description="The explained output.")
    predictions: list[Prediction] | None = Field(
        default=None, description="Classes, most probable first (classification models)."
    )
    values: list[RegressionValue] | None = Field(
        default=None, description="One value per target (regression models)."
    )
    smiles: str = Field(description="Canonical SMILES of the molecule.")
    atoms: list[AtomContribution] = Field(
        description="Every heavy atom in index order. Hydrogens count with their heavy atom."
    )
    svg: str = Field(
        description="RDKit drawing (SVG) of the molecule, atoms coloured by contribution: red "
        "pushes the output up, blue down, stronger for larger magnitudes."
    )
    timings: Timings = Field(description="Server-side durations.")


Explanation = Annotated[ImageExplanation | MoleculeExplanation, Field(discriminator="kind")]


class DrawRequest(GraphInput):
    """``POST /v1/molecules/draw``: a molecule as in predict requests, optional weights."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **GraphInput.model_config["json_schema_extra"],  # exactly one molecule form
            "examples": [{"smiles": "c1ccccc1O", "weights": [0, 0, 0, 0, 0, 0, 1]}],
        },
    )
    weights: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None,
        description="One number per heavy atom (in index order, see AtomContribution.index): "
        "positive ones colour the atom red, negative ones blue, zero leaves it plain.",
        examples=[[0, 0, 1.5]],
    )
    width: int = Field(default=360, ge=64, le=1200, description="Drawing width in pixels.")
    height: int = Field(default=260, ge=64, le=1200, description="Drawing height in pixels.")
