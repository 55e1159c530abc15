"""Pydantic models of every JSON body of the service contract (DESIGN.md section 7).

Friendly API (``/v1``): model listings, ``classify`` responses, ``predict`` requests and
responses. Open Inference Protocol v2 (``/v2``, KServe / Triton REST, JSON tensors only):
server and model metadata, inference requests and responses. Errors: ``{"error": "..."}``.
Every field carries a description and every model an example, so ``/docs`` documents them.

Limits that depend on settings (:class:`MoleculeLimits`: graphs per request, atoms per graph,
SMILES length) are checked by :meth:`PredictRequest.check_limits`, which validation also runs
when the caller passes them as validation context: ``PredictRequest.model_validate(body,
context={"max_graphs": 64, "max_atoms": 256, "max_smiles_chars": None})``; with a context the
lengths of the graph, atom and bond lists are checked before their items are validated.

This module imports no torch and no RDKit: the body decoder processes
(:mod:`app.serving.decoder_pool`) load it to validate large bodies away from the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

UnavailableReason = Literal[
    "no_versions",
    "checkpoint_missing",
    "checkpoint_ambiguous",
    "config_invalid",
    "checkpoint_corrupt",
    "checkpoint_mismatch",
    "architecture_unsupported",
    "input_spec_invalid",
    "warmup_failed",
    "load_failed",
]
"""Why a model version is UNAVAILABLE (:mod:`app.serving.model_state`)."""

PATHS = ("auto", "parallel", "recurrent", "chunkwise", "onnx")
"""Inference paths a client may ask for; ``auto`` lets the server choose."""
RESIZE_MODES = ("model", "native")

INTEGER_RANGES = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}
FLOAT_DATATYPES = ("FP16", "BF16", "FP32", "FP64")
DATATYPES = ("BOOL", *INTEGER_RANGES, *FLOAT_DATATYPES, "BYTES")
"""The Open Inference Protocol v2 tensor datatypes."""

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "BF16",
    "FP32",
    "FP64",
    "BYTES",
]


class LimitExceeded(ValueError):
    """A request is larger than the server allows; ``status_code`` is the HTTP answer."""

    status_code = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


MAX_ABS_CHARGE = 8
"""Largest formal charge (either sign) of an atom object; equals
``models.molecule_features.MAX_ABS_CHARGE`` (not imported: this module stays free of RDKit)."""
MAX_ATOM_HYDROGENS = 8
"""Largest ``hydrogens`` of an atom object; equals ``models.molecule_features``' bound."""
MAX_ATOM_INDEX = 2**31 - 1
BOND_ORDERS = (1, 2, 3, 1.5)
ATOMS_PER_HEAVY_ATOM = 5
"""Atoms including hydrogens allowed per allowed heavy atom (CH4 has 5, an alkane < 3)."""
BONDS_PER_HEAVY_ATOM = 6
"""Bonds (hydrogens' included) allowed per allowed heavy atom: a valid molecule has at most
half the sum of its valences."""
SMILES_CHARS_PER_HEAVY_ATOM = 32
"""Default SMILES length allowed per allowed heavy atom (``[13C@@H]``, ring closures such as
``%12``, branches and bond symbols fit many times over)."""


@dataclass(frozen=True)
class MoleculeLimits:
    """Size limits of molecule requests; None: no limit. ``max_atoms`` counts heavy atoms;
    atoms with hydrogens (listed, bracket, implicit) and bonds are limited to
    ``ATOMS_PER_HEAVY_ATOM`` / ``BONDS_PER_HEAVY_ATOM`` times it, SMILES to
    ``max_smiles_chars`` characters (default ``SMILES_CHARS_PER_HEAVY_ATOM`` times it)."""

    max_graphs: int | None = None
    max_atoms: int | None = None
    max_atoms_with_hydrogens: int | None = None
    max_bonds: int | None = None
    max_smiles_chars: int | None = None

    @classmethod
    def derived(
        cls,
        max_graphs: int | None = None,
        max_atoms: int | None = None,
        max_smiles_chars: int | None = None,
    ) -> MoleculeLimits:
        """The limits implied by the three settings (module docstring)."""
        if max_smiles_chars is None and max_atoms is not None:
            max_smiles_chars = SMILES_CHARS_PER_HEAVY_ATOM * max_atoms
        if max_atoms is None:
            return cls(max_graphs=max_graphs, max_smiles_chars=max_smiles_chars)
        return cls(
            max_graphs=max_graphs,
            max_atoms=max_atoms,
            max_atoms_with_hydrogens=ATOMS_PER_HEAVY_ATOM * max_atoms,
            max_bonds=BONDS_PER_HEAVY_ATOM * max_atoms,
            max_smiles_chars=max_smiles_chars,
        )

    @classmethod
    def from_context(cls, context: Any) -> MoleculeLimits:
        """From a validation context ``{"max_graphs", "max_atoms", "max_smiles_chars"}``."""
        if not isinstance(context, Mapping):
            return cls()
        return cls.derived(
            context.get("max_graphs"), context.get("max_atoms"), context.get("max_smiles_chars")
        )

    def context(self) -> dict[str, int | None]:
        """The validation context that gives these limits back."""
        return {
            "max_graphs": self.max_graphs,
            "max_atoms": self.max_atoms,
            "max_smiles_chars": self.max_smiles_chars,
        }

    def graphs_problem(self, count: int) -> str | None:
        if self.max_graphs is not None and count > self.max_graphs:
            return f"{count} graphs exceed the limit of {self.max_graphs} per request"
        return None

    def heavy_atoms_problem(self, count: int) -> str | None:
        if self.max_atoms is not None and count > self.max_atoms:
            return f"{count} heavy atoms exceed the limit of {self.max_atoms} per graph"
        return None

    def nodes_problem(self, count: int) -> str | None:
        """Atoms a molecule keeps as graph nodes: heavy atoms and the hydrogens RDKit keeps as
        atoms (isotopes, unbonded)."""
        if self.max_atoms is not None and count > self.max_atoms:
            return (
                f"{count} atoms would stay graph nodes (heavy atoms and hydrogens kept as "
                f"atoms: isotopes such as [2H], unbonded ones), more than the limit of "
                f"{self.max_atoms} per graph"
            )
        return None

    def atoms_problem(self, count: int) -> str | None:
        """Atoms including hydrogens."""
        limit = self.max_atoms_with_hydrogens
        if limit is not None and count > limit:
            return f"{count} atoms including hydrogens exceed the limit of {limit} per graph"
        return None

    def bonds_problem(self, count: int) -> str | None:
        if self.max_bonds is not None and count > self.max_bonds:
            return f"{count} bonds exceed the limit of {self.max_bonds} per graph"
        return None

    def smiles_problem(self, length: int) -> str | None:
        if self.max_smiles_chars is not None and length > self.max_smiles_chars:
            return f"{length} characters exceed the limit of {self.max_smiles_chars} per SMILES"
        return None


def _raise_problem(problem: str | None) -> None:
    if problem is not None:
        raise ValueError(problem)


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _example(**example: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


# ---------------------------------------------------------------------------- common


class ErrorResponse(_Schema):
    """Every error answer (4xx / 5xx) of both APIs."""

    model_config = _example(error="graphs[2].smiles: invalid SMILES 'C1CC'")
    error: str = Field(description="What went wrong, naming the field or limit at fault.")
    reason: UnavailableReason | None = Field(
        default=None,
        description="Only in the 503 of a model version that cannot serve until the server "
        "restarts (no Retry-After): why, as a reason class.",
    )


class Timings(_Schema):
    """Server-side durations of one request, in milliseconds."""

    model_config = _example(queue_ms=1.2, inference_ms=8.4, total_ms=11.0)
    queue_ms: float = Field(ge=0, description="Time spent waiting in the batching queue.")
    inference_ms: float = Field(ge=0, description="Time of the model call of the batch.")
    total_ms: float = Field(ge=0, description="Time from receiving the request to answering.")


class Prediction(_Schema):
    """One class and its probability."""

    model_config = _example(label="pointing", index=1, probability=0.93)
    label: str = Field(description="Class name recorded in the checkpoint.")
    index: int = Field(ge=0, description="Class index (output position of the model).")
    probability: float = Field(ge=0, le=1, description="Softmax probability of the class.")


class ImageSize(_Schema):
    """An image size in pixels."""

    model_config = _example(height=96, width=96)
    height: int = Field(ge=1, description="Height in pixels.")
    width: int = Field(ge=1, description="Width in pixels.")


# ---------------------------------------------------------------------------- ops


class Liveness(_Schema):
    """``GET /v2/health/live``."""

    model_config = _example(live=True)
    live: bool = Field(description="Always true: the server answers.")


class Readiness(_Schema):
    """``GET /v2/health/ready`` when ready (else 503 with an error)."""

    model_config = _example(ready=True)
    ready: bool = Field(description="Always true: the server takes inference requests.")


class VersionState(_Schema):
    """The state of one model version in ``GET /healthz``."""

    model_config = _example(state="UNAVAILABLE", reason="checkpoint_corrupt")
    state: Literal["READY", "UNAVAILABLE"] = Field(description="READY or UNAVAILABLE.")
    reason: UnavailableReason | None = Field(
        default=None, description="Why it is UNAVAILABLE; null when READY."
    )


class EngineState(_Schema):
    """The connection of this worker to the inference engine process."""

    model_config = _example(connected=True)
    connected: bool = Field(description="Whether the engine process is connected.")


class Health(_Schema):
    """``GET /healthz``: liveness with the state of every model version."""

    model_config = _example(
        status="ok",
        ready=True,
        draining=False,
        engine="inline",
        models={
            "arrow-pointing/1": {"state": "READY", "reason": None},
            "solubility/2": {"state": "UNAVAILABLE", "reason": "checkpoint_corrupt"},
            "empty": {"state": "UNAVAILABLE", "reason": "no_versions"},
        },
    )
    status: Literal["ok"] = Field(description="Always ok: the server answers.")
    ready: bool = Field(description="Whether the server takes inference requests.")
    draining: bool = Field(description="Whether the server is shutting down.")
    engine: Literal["inline"] | EngineState = Field(
        description="inline: the models run in this process; else the engine connection."
    )
    models: dict[str, VersionState] = Field(
        description="Every model version as name/version (a model without versions: its "
        "name alone) with its state."
    )


# ---------------------------------------------------------------------------- /v1 models


_MODEL_SUMMARY_EXAMPLE: dict[str, Any] = dict(
    name="arrow-plstm",
    version="1",
    versions=["1"],
    architecture="plstm_vis_t",
    kind="image",
    task="classification",
    labels=["not_pointing", "pointing"],
    state="READY",
    reason=None,
    ready=True,
    paths=["parallel", "recurrent", "chunkwise"],
    input={"kind": "image", "height": 96, "width": 96, "patch_size": 8},
    preprocessing={"color": "grayscale", "rescale": 1 / 255},
    metrics={"test": {"dataset": "arrow-pointing", "split": "test", "seed": 0, "acc": 0.97}},
    weights_sha256="9f2c" + "0" * 60,
)


class ModelSummary(_Schema):
    """One model version (``GET /v1/models`` items, ``GET /v1/models/{name}``). An
    UNAVAILABLE one (listed only) carries its name, versions, state and reason, nothing else."""

    model_config = _example(**_MODEL_SUMMARY_EXAMPLE)
    name: str = Field(description="Model name (directory under the model repository).")
    version: str | None = Field(
        description="Version that answers requests without a version; null for a model "
        "without versions."
    )
    versions: list[str] = Field(description="All versions of this model, ready or not.")
    state: Literal["READY", "UNAVAILABLE"] = Field(
        description="READY: loaded and warmed up; UNAVAILABLE: cannot serve until the server "
        "restarts (see reason)."
    )
    reason: UnavailableReason | None = Field(
        default=None, description="Why the version is UNAVAILABLE; null when READY."
    )
    architecture: str | None = Field(
        default=None, description="Registry name of the network, e.g. plstm_vis_t."
    )
    kind: Literal["image", "graph"] | None = Field(
        default=None, description="Input kind: images or molecules."
    )
    task: Literal["classification", "regression"] | None = Field(
        default=None, description="Output kind."
    )
    labels: list[str] = Field(
        default_factory=list, description="Class names, or regression target names."
    )
    ready: bool = Field(description="Loaded and warmed up; requests are accepted.")
    paths: list[str] = Field(
        default_factory=list, description="Inference paths this model supports."
    )
    input: Any = Field(default=None, description="Input spec recorded by training.")
    preprocessing: Any = Field(default=None, description="Preprocessing recorded by training.")
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Evaluation results recorded in the checkpoint."
    )
    weights_sha256: str | None = Field(
        default=None, description="sha256 of the weights file (identifies the trained weights)."
    )
    onnx: dict[str, Any] | None = Field(
        default=None,
        description="ONNX Runtime state when PLSTM_ONNX is on: available, and the export's "
        "providers, opset, image_size or max_graph_nodes and weights_sha256; or the error "
        "that left the model on its torch paths.",
    )


class ModelList(_Schema):
    """``GET /v1/models``."""

    model_config = _example(models=[_MODEL_SUMMARY_EXAMPLE])
    models: list[ModelSummary] = Field(
        description="Every model of the repository (its default version), ready or not."
    )


class ClassifyResponse(_Schema):
    """``POST /v1/models/{name}/classify``."""

    model_config = _example(
        model="arrow-plstm",
        version="1",
        path="parallel",
        resize="native",
        image_size={"height": 128, "width": 136},
        original_size={"height": 128, "width": 130},
        timings={"queue_ms": 0.4, "inference_ms": 9.1, "total_ms": 12.3},
        predictions=[
            {"label": "pointing", "index": 1, "probability": 0.93},
            {"label": "not_pointing", "index": 0, "probability": 0.07},
        ],
    )
    model: str = Field(description="Model name.")
    version: str = Field(description="Model version that answered.")
    path: str = Field(description="Inference path used (parallel, recurrent, chunkwise, onnx).")
    resize: Literal["model", "native"] = Field(
        description="model: resized to the training size; native: padded to the patch grid."
    )
    image_size: ImageSize = Field(description="Size of the tensor fed to the model.")
    original_size: ImageSize = Field(description="Size of the uploaded image (upright).")
    timings: Timings = Field(description="Server-side durations.")
    predictions: list[Prediction] = Field(description="Top-k classes, most probable first.")


# ---------------------------------------------------------------------------- /v1 predict


ElementSymbol = Annotated[str, StringConstraints(min_length=1, max_length=3)]


class AtomSpec(_Schema):
    """One atom given as an object (all keys but ``element`` optional)."""

    model_config = _example(element="N", charge=1, aromatic=False, hydrogens=3)
    element: ElementSymbol = Field(description="Element symbol, e.g. C, N, O, Cl.")
    charge: StrictInt | None = Field(
        default=None,
        ge=-MAX_ABS_CHARGE,
        le=MAX_ABS_CHARGE,
        description="Formal charge (default 0).",
    )
    aromatic: StrictBool | None = Field(default=None, description="Aromatic atom flag.")
    hydrogens: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_ATOM_HYDROGENS,
        description="Total attached hydrogens; omitted: RDKit fills the valence implicitly.",
    )


def _bond_order(order: float) -> float:
    if order not in BOND_ORDERS:
        raise ValueError(f"bond order must be one of 1, 2, 3, 1.5, got {order!r}")
    return order


def _atom_form(atom: Any) -> str:
    return "object" if isinstance(atom, Mapping | AtomSpec) else "symbol"


Atom = Annotated[
    Annotated[ElementSymbol, Tag("symbol")] | Annotated[AtomSpec, Tag("object")],
    Discriminator(_atom_form),
]
"""An atom as an element symbol or an :class:`AtomSpec` object; errors name the form they
were read as (``atoms[3].object.charge: ...``)."""
AtomIndex = Annotated[StrictInt, Field(ge=0, le=MAX_ATOM_INDEX)]
BondOrder = Annotated[
    StrictInt | StrictFloat,
    AfterValidator(_bond_order),
    Field(json_schema_extra={"enum": list(BOND_ORDERS)}),
]
Bond = tuple[AtomIndex, AtomIndex, BondOrder]


class GraphInput(_Schema):
    """One molecule: either ``smiles`` or ``atoms`` (+ ``bonds``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"smiles": "CCO"},
                {"atoms": ["C", "C", {"element": "O"}], "bonds": [[0, 1, 1], [1, 2, 1]]},
            ],
            # exactly one form (null stands for absent), as _one_form checks
            "oneOf": [
                {
                    "required": ["smiles"],
                    "properties": {
                        "smiles": {"type": "string"},
                        "atoms": {"type": "null"},
                        "bonds": {"type": "null"},
                    },
                },
                {
                    "required": ["atoms"],
                    "properties": {"atoms": {"type": "array"}, "smiles": {"type": "null"}},
                },
            ],
        },
    )
    smiles: str | None = Field(
        default=None, description="The molecule as a SMILES string.", examples=["c1ccccc1O"]
    )
    atoms: list[Atom] | None = Field(
        default=None,
        description="Atoms as element symbols or atom objects; hydrogens may be listed.",
        examples=[["C", "C", "O"]],
    )
    bonds: list[Bond] | None = Field(
        default=None,
        description="Bonds [i, j, order]: 0-based atom indices, order 1, 2, 3 or 1.5 "
        "(aromatic). Only with atoms; omitted means no bonds.",
        examples=[[[0, 1, 1], [1, 2, 1]]],
    )

    @field_validator("smiles")
    @classmethod
    def _smiles_length(cls, smiles: str | None, info: ValidationInfo) -> str | None:
        if smiles is not None:
            _raise_problem(MoleculeLimits.from_context(info.context).smiles_problem(len(smiles)))
        return smiles

    @field_validator("atoms", mode="before")
    @classmethod
    def _atoms_count_first(cls, atoms: Any, info: ValidationInfo) -> Any:
        if isinstance(atoms, list):
            _raise_problem(MoleculeLimits.from_context(info.context).atoms_problem(len(atoms)))
        return atoms

    @field_validator("bonds", mode="before")
    @classmethod
    def _bonds_count_first(cls, bonds: Any, info: ValidationInfo) -> Any:
        if isinstance(bonds, list):
            _raise_problem(MoleculeLimits.from_context(info.context).bonds_problem(len(bonds)))
        return bonds

    @model_validator(mode="after")
    def _one_form(self) -> GraphInput:
        if self.smiles is not None and (self.atoms is not None or self.bonds is not None):
            raise ValueError("give either smiles or atoms/bonds, not both")
        if self.smiles is None and self.atoms is None:
            raise ValueError("give smiles or atoms (with bonds)")
        return self

    def heavy_atom_count(self) -> int | None:
        """Listed non-hydrogen atoms (None for a SMILES graph)."""
        if self.atoms is None:
            return None
        return sum((a if isinstance(a, str) else a.element) != "H" for a in self.atoms)

    def atom_payload(self) -> list[Any]:
        """``atoms`` as :func:`models.molecule_features.featurize_graph` takes them."""
        return [
            a if isinstance(a, str) else a.model_dump(exclude_none=True) for a in self.atoms or []
        ]


class PredictRequest(_Schema):
    """``POST /v1/models/{name}/predict``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "graphs": [
                        {"smiles": "CCO"},
                        {"atoms": ["C", "O"], "bonds": [[0, 1, 2]]},
                    ]
                }
            ]
        },
    )
    graphs: list[GraphInput] = Field(
        min_length=1, description="Molecules to predict, answered in the same order."
    )

    @field_validator("graphs", mode="before")
    @classmethod
    def _graphs_count_first(cls, graphs: Any, info: ValidationInfo) -> Any:
        if isinstance(graphs, list):
            _raise_problem(MoleculeLimits.from_context(info.context).graphs_problem(len(graphs)))
        return graphs

    def check_limits(self, limits: MoleculeLimits) -> None:
        """Raise :class:`LimitExceeded` naming the first limit exceeded: graphs per request,
        and per graph the listed atoms (hydrogens included) and heavy (non-hydrogen) atoms,
        bonds or SMILES characters. SMILES atoms are counted after parsing
        (:mod:`app.api.molecules`)."""
        problem = limits.graphs_problem(len(self.graphs))
        if problem is not None:
            raise LimitExceeded(f"graphs: {problem}")
        for g, graph in enumerate(self.graphs):
            checks = (
                ("smiles", limits.smiles_problem(len(graph.smiles or ""))),
                ("atoms", limits.atoms_problem(len(graph.atoms or []))),
                ("atoms", limits.heavy_atoms_problem(graph.heavy_atom_count() or 0)),
                ("bonds", limits.bonds_problem(len(graph.bonds or []))),
            )
            for field, problem in checks:
                if problem is not None:
                    raise LimitExceeded(f"graphs[{g}].{field}: {problem}")

    @model_validator(mode="after")
    def _context_limits(self, info: ValidationInfo) -> PredictRequest:
        self.check_limits(MoleculeLimits.from_context(info.context))
        return self


class RegressionValue(_Schema):
    """One predicted regression target."""

    model_config = _example(name="log_solubility", value=-2.31)
    name: str = Field(description="Target name recorded in the checkpoint.")
    value: float = Field(description="Predicted value.")


class GraphResult(_Schema):
    """The answer for one graph: ``predictions`` (classification) or ``values``
    (regression)."""

    model_config = _example(
        index=0,
        num_atoms=3,
        predictions=[{"label": "high", "index": 2, "probability": 0.81}],
        values=None,
    )
    index: int = Field(ge=0, description="Position of the graph in the request.")
    num_atoms: int = Field(ge=1, description="Heavy atoms of the featurized graph.")
    predictions: list[Prediction] | None = Field(
        default=None, description="Classes, most probable first (classification models)."
    )
    values: list[RegressionValue] | None = Field(
        default=None, description="One value per target (regression models)."
    )


class PredictResponse(_Schema):
    """``POST /v1/models/{name}/predict``."""

    model_config = _example(
        model="solubility-plstm",
        version="1",
        path="parallel",
        task="regression",
        timings={"queue_ms": 0.3, "inference_ms": 4.0, "total_ms": 6.2},
        results=[
            {"index": 0, "num_atoms": 3, "values": [{"name": "log_solubility", "value": 1.1}]}
        ],
    )
    model: str = Field(description="Model name.")
    version: str = Field(description="Model version that answered.")
    path: str = Field(description="Inference path used (parallel, recurrent, onnx).")
    task: Literal["classification", "regression"] = Field(description="Output kind.")
    timings: Timings = Field(description="Server-side durations.")
    results: list[GraphResult] = Field(description="One result per request graph, in order.")


# ---------------------------------------------------------------------------- /v2 (OIP)


def flatten_data(data: Any) -> list[Any]:
    """Row-major flattening of a (possibly nested) JSON tensor ``data`` list."""
    if not isinstance(data, list):
        return [data]
    if not any(issubclass(kind, list) for kind in set(map(type, data))):
        return data
    out: list[Any] = []
    stack: list[Iterable[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


FLOAT_MAX = {
    "FP16": float(np.finfo(np.float16).max),
    "BF16": 3.3895313892515355e38,
    "FP32": float(np.finfo(np.float32).max),
    "FP64": float(np.finfo(np.float64).max),
}
"""Largest finite magnitude of each float datatype."""
_ELEMENT_TYPES: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
    **{datatype: frozenset({int}) for datatype in INTEGER_RANGES},
    **{datatype: frozenset({int, float}) for datatype in FLOAT_DATATYPES},
}

TensorValues = np.ndarray | list[str]
"""Flat row-major tensor elements: a numpy array (bool, int64, uint64 for UINT64, float32 for
FP16 / BF16 / FP32, float64 for FP64) or, for BYTES, a list of str."""


class TensorValueError(ValueError):
    """A tensor element of the right type whose value is not finite or out of range."""


def _type_problem(datatype: str, value: Any) -> str | None:
    """Why ``value`` is not of an element type of ``datatype``, or None."""
    if type(value) in _ELEMENT_TYPES[datatype]:
        return None
    if datatype == "BOOL":
        return "expected true or false"
    if datatype == "BYTES":
        return "expected a string"
    return "expected an integer" if datatype in INTEGER_RANGES else "expected a number"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _integers(name: str, datatype: str, flat: list[Any]) -> np.ndarray:
    low, high = INTEGER_RANGES[datatype]
    out_of_range = f"out of the {datatype} range [{low}, {high}]"
    try:
        values = np.array(flat, dtype=np.uint64 if datatype == "UINT64" else np.int64)
    except OverflowError:  # beyond 64 bits: find it element by element
        i = next(i for i, v in enumerate(flat) if not low <= v <= high)
        raise TensorValueError(f"{name}: data[{i}] = {flat[i]!r}: {out_of_range}") from None
    bad = (values < low) | (values > high)
    if bad.any():
        i = _first(bad)
        raise TensorValueError(f"{name}: data[{i}] = {flat[i]!r}: {out_of_range}")
    return values


def _floats(name: str, datatype: str, flat: list[Any]) -> np.ndarray:
    limit = FLOAT_MAX[datatype]
    out_of_range = f"out of the {datatype} range [{-limit:.7g}, {limit:.7g}]"
    try:
        values = np.array(flat, dtype=np.float64)
    except OverflowError:  # an integer beyond float64: find it element by element
        i = next(i for i, v in enumerate(flat) if isinstance(v, int) and abs(v) > limit)
        raise TensorValueError(f"{name}: data[{i}] = {flat[i]}: {out_of_range}") from None
    finite = np.isfinite(values)
    if not finite.all():
        i = _first(~finite)
        raise TensorValueError(
            f"{name}: data[{i}] = {flat[i]!r}: expected a finite number for {datatype}"
        )
    too_large = np.abs(values) > limit
    if too_large.any():
        i = _first(too_large)
        raise TensorValueError(f"{name}: data[{i}] = {flat[i]!r}: {out_of_range}")
    return values if datatype == "FP64" else values.astype(np.float32)


def check_tensor(name: str, shape: Sequence[int], datatype: str, data: Any) -> TensorValues:
    """Validate a JSON tensor; returns its flattened elements (:data:`TensorValues`).
    ValueError names the problem: unknown datatype, shape product != number of elements,
    element of the wrong type; :class:`TensorValueError` (a ValueError) an element that is not
    finite or out of its datatype's range. Checks are vectorised (numpy) but for locating the
    first bad element."""
    if datatype not in DATATYPES:
        raise ValueError(f"{name}: unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")
    flat = flatten_data(data)
    expected = math.prod(shape)
    if expected != len(flat):
        raise ValueError(
            f"{name}: shape {list(shape)} holds {expected} elements but data has {len(flat)}"
        )
    if not set(map(type, flat)) <= _ELEMENT_TYPES[datatype]:  # C speed; the loop only on error
        for i, value in enumerate(flat):
            problem = _type_problem(datatype, value)
            if problem is not None:
                raise ValueError(f"{name}: data[{i}] = {value!r}: {problem} for {datatype}")
    if datatype == "BYTES":
        return flat
    if datatype == "BOOL":
        return np.array(flat, dtype=bool)
    if datatype in INTEGER_RANGES:
        return _integers(name, datatype, flat)
    return _floats(name, datatype, flat)


NonNegative = Annotated[int, Field(ge=0)]
Dimension = Annotated[int, Field(ge=-1)]


class ServerMetadata(_Schema):
    """``GET /v2``."""

    model_config = _example(name="plstm", version="0.1.0", extensions=["model_repository"])
    name: str = Field(description="Server name.")
    version: str = Field(description="Server version.")
    extensions: list[str] = Field(description="Supported protocol extensions.")


class TensorMetadata(_Schema):
    """One input or output of a model."""

    model_config = _example(name="images", datatype="FP32", shape=[-1, 3, -1, -1])
    name: str = Field(min_length=1, description="Tensor name.")
    datatype: Datatype = Field(description="Element type (OIP v2 datatype).")
    shape: list[Dimension] = Field(description="Shape; -1 marks a variable dimension.")


class ModelMetadata(_Schema):
    """``GET /v2/models/{name}[/versions/{version}]``."""

    model_config = _example(
        name="arrow-plstm",
        versions=["1"],
        platform="pytorch",
        inputs=[{"name": "images", "datatype": "FP32", "shape": [-1, 3, -1, -1]}],
        outputs=[{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
    )
    name: str = Field(description="Model name.")
    versions: list[str] = Field(description="Available versions.")
    platform: str = Field(description="Framework the model runs on.")
    inputs: list[TensorMetadata] = Field(description="Input tensors the model accepts.")
    outputs: list[TensorMetadata] = Field(description="Output tensors the model produces.")


class ModelReady(_Schema):
    """``GET /v2/models/{name}[/versions/{version}]/ready`` body (status 200 or 503)."""

    model_config = _example(name="arrow-plstm", ready=True)
    name: str = Field(description="Model name.")
    ready: bool = Field(description="Whether the model accepts inference requests.")
    reason: UnavailableReason | None = Field(
        default=None,
        description="Only for a version that cannot serve until the server restarts: why.",
    )


TENSOR_VALUE_ERROR = "tensor_value"
"""Pydantic error type of an input element that is not finite or out of range."""


class RequestInput(_Schema):
    """One input tensor of an inference request (JSON data, row-major)."""

    model_config = _example(
        name="smiles", shape=[2], datatype="BYTES", data=["CCO", "c1ccccc1"], parameters=None
    )
    name: str = Field(min_length=1, description="Input name from the model metadata.")
    shape: list[NonNegative] = Field(description="Tensor shape.")
    datatype: str = Field(
        description="Element type: BOOL, UINT8..INT64, FP16..FP64, BYTES.",
        json_schema_extra={"enum": list(DATATYPES)},
    )
    data: list[Any] = Field(description="Elements, flat or nested, in row-major order.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")
    _values: TensorValues = PrivateAttr()

    @model_validator(mode="after")
    def _consistent(self) -> RequestInput:
        name = f"input {self.name!r}"
        try:
            self._values = check_tensor(name, self.shape, self.datatype, self.data)
        except TensorValueError as exc:
            problem = {"problem": str(exc)}
            raise PydanticCustomError(TENSOR_VALUE_ERROR, "{problem}", problem) from None
        return self

    @property
    def values(self) -> TensorValues:
        """The elements, flat row-major, as :func:`check_tensor` returns them."""
        return self._values


class RequestOutput(_Schema):
    """One requested output."""

    model_config = _example(name="probabilities", parameters={"binary_data": False})
    name: str = Field(min_length=1, description="Output name from the model metadata.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")


def _unique(names: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: name {name!r} given twice")
        seen.add(name)


class InferenceRequest(_Schema):
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""

    model_config = _example(
        id="42",
        inputs=[{"name": "smiles", "shape": [1], "datatype": "BYTES", "data": ["CCO"]}],
        outputs=[{"name": "probabilities"}],
    )
    id: str | None = Field(default=None, description="Request id, echoed in the response.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")
    inputs: list[RequestInput] = Field(min_length=1, description="Input tensors.")
    outputs: list[RequestOutput] | None = Field(
        default=None, description="Outputs to return; omitted: all of them."
    )

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, inputs: list[RequestInput]) -> list[RequestInput]:
        _unique((i.name for i in inputs), "inputs")
        return inputs

    @field_validator("outputs")
    @classmethod
    def _unique_outputs(cls, outputs: list[RequestOutput] | None) -> list[RequestOutput] | None:
        _unique((o.name for o in outputs or []), "outputs")
        return outputs


class ResponseOutput(_Schema):
    """One output tensor of an inference response."""

    model_config = _example(
        name="probabilities", shape=[1, 2], datatype="FP32", data=[0.1, 0.9], parameters=None
    )
    name: str = Field(min_length=1, description="Output name.")
    shape: list[NonNegative] = Field(description="Tensor shape.")
    datatype: Datatype = Field(description="Element type (OIP v2 datatype).")
    data: list[Any] = Field(description="Elements as a flat row-major list.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")

    @model_validator(mode="after")
    def _consistent(self) -> ResponseOutput:
        check_tensor(f"output {self.name!r}", self.shape, self.datatype, self.data)
        return self


class InferenceResponse(_Schema):
    """``POST /v2/models/{name}[/versions/{version}]/infer`` answer."""

    model_config = _example(
        model_name="solubility-plstm",
        model_version="1",
        id="42",
        outputs=[
            {"name": "probabilities", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.7]}
        ],
    )
    model_name: str = Field(description="Model name.")
    model_version: str | None = Field(default=None, description="Model version that answered.")
    id: str | None = Field(default=None, description="The request id, if one was given.")
    parameters: dict[str, Any] | None = Field(default=None, description="Optional parameters.")
    outputs: list[ResponseOutput] = Field(description="Output tensors.")


# ---------------------------------------------------------------------------- errors


def format_location(loc: Sequence[int | str]) -> str:
    """A pydantic error location → ``graphs[2].smiles`` (a leading ``body`` is dropped)."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_error_message(errors: Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    """Pydantic / FastAPI validation errors → one line for :class:`ErrorResponse`, each
    problem as ``field.path: message`` (at most ``limit``, then a count)."""
    lines = []
    for error in errors[:limit]:
        where = format_location(error.get("loc", ()))
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return "; ".join(lines) or "invalid request"
