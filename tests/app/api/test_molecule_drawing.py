"""app.api.molecule_drawing: request molecules with the model graph and the node of every atom,
weight colours, and the SVG drawing."""

from __future__ import annotations

import re

import pytest
import torch

from app.api.molecule_drawing import (
    NEGATIVE,
    POSITIVE,
    draw_svg,
    molecule_from_input,
    weight_colour,
)
from app.api.molecules import InvalidGraph
from app.api.schemas.v1 import GraphInput, MoleculeLimits
from models.molecule_features import atom_features, featurize_smiles


@pytest.mark.parametrize(
    "graph",
    [
        GraphInput(smiles="CC(=O)Oc1ccccc1C(=O)O"),
        GraphInput(smiles="[H]OC([H])([H])C"),
        GraphInput(atoms=["O", "C", "C", "H"], bonds=[[0, 1, 1], [1, 2, 1], [0, 3, 1]]),
    ],
)
def test_every_atom_finds_its_node(graph: GraphInput) -> None:
    molecule = molecule_from_input(graph)
    x = molecule.graph.x
    assert sorted(molecule.node_of_atom) == list(range(x.shape[0]))
    for atom in molecule.mol.GetAtoms():
        node = molecule.node_of_atom[atom.GetIdx()]
        assert x[node].tolist() == atom_features(atom)
    assert torch.equal(x, featurize_smiles(molecule.smiles).x)


def test_hydrogens_fold_into_their_atoms() -> None:
    molecule = molecule_from_input(GraphInput(smiles="[H]OC([H])([H])C"))
    assert [a.GetSymbol() for a in molecule.mol.GetAtoms()] == ["O", "C", "C"]
    assert molecule.smiles == "CCO"


@pytest.mark.parametrize(
    ("graph", "max_atoms", "message"),
    [
        (GraphInput(smiles="C1CC"), None, "smiles: invalid SMILES 'C1CC'"),
        (GraphInput(smiles="CCCC"), 3, "smiles: 4 heavy atoms exceed the limit of 3 per graph"),
        (GraphInput(atoms=["C", "Xx"]), None, "atoms[1].element: unknown element 'Xx'"),
    ],
)
def test_bad_molecules_name_the_field(
    graph: GraphInput, max_atoms: int | None, message: str
) -> None:
    with pytest.raises(InvalidGraph) as info:
        molecule_from_input(graph, MoleculeLimits.derived(max_atoms=max_atoms))
    assert info.value.message == message


@pytest.mark.parametrize(
    ("weight", "scale", "expected"),
    [
        (1.0, 1.0, POSITIVE),
        (-2.0, 2.0, NEGATIVE),
        (5.0, 1.0, POSITIVE),
        (0.0, 1.0, (1.0, 1.0, 1.0)),
        (0.5, 1.0, tuple((1 + c) / 2 for c in POSITIVE)),
        (1.0, 0.0, (1.0, 1.0, 1.0)),
    ],
)
def test_weight_colours_go_from_white_to_red_or_blue(
    weight: float, scale: float, expected: tuple
) -> None:
    assert weight_colour(weight, scale) == pytest.approx(expected)


def test_only_atoms_with_weight_get_a_disc() -> None:
    mol = molecule_from_input(GraphInput(smiles="CCO")).mol
    assert "<ellipse" not in draw_svg(mol)
    assert "<ellipse" not in draw_svg(mol, [0.0, 0.0, 0.0])
    svg = draw_svg(mol, [0.0, 0.3, -1.0], width=120, height=90)
    assert sorted(re.findall(r"<ellipse[^>]*class='atom-(\d+)'", svg)) == ["1", "2"]
    assert "width='120px'" in svg and "height='90px'" in svg


def test_weights_must_match_the_atoms() -> None:
    mol = molecule_from_input(GraphInput(smiles="CCO")).mol
    with pytest.raises(ValueError, match="weights: 4 values given for 3 heavy atoms"):
        draw_svg(mol, [1.0, 2.0, 3.0, 4.0])
