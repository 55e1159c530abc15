"""Bodies of the friendly API (``/v1``): model listings, ``classify`` responses, ``predict``
requests and responses (DESIGN.md section 7).

Limits that depend on settings (:class:`MoleculeLimits`: graphs per request, atoms per graph,
SMILES length) are checked by :meth:`PredictRequest.check_limits`, which validation also runs
when the caller passes them as validation context: ``PredictRequest.model_validate(body,
context={"max_graphs": 64, "max_atoms": 256, "max_smiles_chars": None})``; with a context the
lengths of the graph, atom and bond lists are checked before their items are validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.api.schemas.common import (
    ImageSize,
    Prediction,
    Timings,
    UnavailableReason,
    _example,
    _Schema,
)
from app.core.errors import ApiError


class LimitExceeded(ApiError, ValueError):
    """A request is larger than the server allows; ``status_code`` is the HTTP answer."""

    status_code = 422

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, message)


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
