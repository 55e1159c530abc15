"""Molecules of requests as RDKit drawings (SVG), atoms optionally coloured by a weight each.

:func:`molecule_from_input` reads one request molecule (SMILES or atoms / bonds) into the RDKit
molecule that is drawn (hydrogens folded into their heavy atoms, so atom i is the i-th heavy
atom of the input) together with the :class:`MolGraph` the models take and the node of every
atom in it (its canonical rank, :func:`models.molecule_features.canonical_ranks`).

Colours: a positive weight is red, a negative one blue, each the stronger the larger its
magnitude relative to the largest magnitude of the molecule; zero leaves the atom plain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rdkit import Chem, rdBase
from rdkit.Chem.Draw import rdMolDraw2D

from app.api.molecules import InvalidGraph, featurize_input
from app.api.schemas.v1 import GraphInput, MoleculeLimits
from models.molecule_features import MolGraph, canonical_ranks, mol_from_graph, mol_from_smiles

POSITIVE = (214 / 255, 39 / 255, 40 / 255)
NEGATIVE = (33 / 255, 102 / 255, 191 / 255)
"""The colours of the web page's image overlay (app/web/show.js)."""
HIGHLIGHT_RADIUS = 0.45
"""Radius of an atom's coloured disc, in bond lengths."""


@dataclass(frozen=True, eq=False)
class Molecule:
    """``mol``: the RDKit molecule without hydrogen atoms; ``graph``: its model input;
    ``node_of_atom[i]``: the graph node of atom i."""

    mol: Chem.Mol
    graph: MolGraph
    node_of_atom: list[int]

    @property
    def smiles(self) -> str:
        """Canonical SMILES."""
        return Chem.MolToSmiles(self.mol)


def molecule_from_input(graph: GraphInput, limits: MoleculeLimits | None = None) -> Molecule:
    """One validated request molecule (a request body of its own) → :class:`Molecule`;
    :class:`InvalidGraph` (422) names the field (``smiles: invalid SMILES 'C1CC'``) for
    anything that is not a molecule or exceeds ``limits`` (None: no limits)."""
    try:
        featurized = featurize_input(graph, "", limits)
    except InvalidGraph as exc:
        raise InvalidGraph(exc.message.removeprefix(".")) from None
    if graph.smiles is not None:
        mol = mol_from_smiles(graph.smiles)
    else:
        mol = mol_from_graph(graph.atom_payload(), list(graph.bonds or []))
    with rdBase.BlockLogs():
        mol = Chem.RemoveHs(mol)
    if mol.GetNumAtoms() != featurized.num_nodes:  # both come from the same input
        raise InvalidGraph("the molecule could not be drawn")
    return Molecule(mol, featurized, canonical_ranks(mol))


def weight_colour(weight: float, scale: float) -> tuple[float, float, float]:
    """RGB in 0..1: white blended towards red (positive) or blue (negative) by
    ``|weight| / scale``."""
    strength = min(1.0, abs(weight) / scale) if scale > 0 else 0.0
    colour = POSITIVE if weight > 0 else NEGATIVE
    return tuple(1.0 - strength * (1.0 - c) for c in colour)  # type: ignore[return-value]


def draw_svg(
    mol: Chem.Mol, weights: Sequence[float] | None = None, *, width: int = 360, height: int = 260
) -> str:
    """The SVG drawing of ``mol`` (``width`` × ``height`` pixels, white background); with
    ``weights`` (one per atom) every atom of non-zero weight gets a disc of its
    :func:`weight_colour`. ValueError when the weights do not match the atoms."""
    if weights is not None and len(weights) != mol.GetNumAtoms():
        raise ValueError(
            f"weights: {len(weights)} values given for {mol.GetNumAtoms()} heavy atoms"
        )
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    options = drawer.drawOptions()
    options.atomHighlightsAreCircles = True
    options.fillHighlights = True
    options.useBWAtomPalette()  # element colours would read as contributions
    atoms: list[int] = []
    colours: dict[int, tuple[float, float, float]] = {}
    if weights is not None:
        scale = max((abs(w) for w in weights), default=0.0)
        atoms = [i for i, w in enumerate(weights) if w != 0 and scale > 0]
        colours = {i: weight_colour(weights[i], scale) for i in atoms}
    with rdBase.BlockLogs():
        rdMolDraw2D.PrepareAndDrawMolecule(
            drawer,
            mol,
            highlightAtoms=atoms,
            highlightAtomColors=colours,
            highlightAtomRadii={i: HIGHLIGHT_RADIUS for i in atoms},
            highlightBonds=[],
        )
    drawer.FinishDrawing()
    return drawer.GetDrawingText()
