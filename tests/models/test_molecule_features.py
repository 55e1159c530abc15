"""Molecule featurisation: feature values, canonical DAG, atom-order invariance, errors."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem

from models.graph import PLSTMGraph
from models.molecule_features import (
    CHARGES,
    ELEMENTS,
    MAX_DEGREE,
    MAX_HYDROGENS,
    NUM_EDGE_FEATURES,
    NUM_NODE_FEATURES,
    MolGraph,
    batch_graphs,
    featurize_graph,
    featurize_mol,
    featurize_smiles,
)

# column offsets of the atom feature blocks
EL = 0
DEG = EL + len(ELEMENTS) + 1
CHG = DEG + MAX_DEGREE + 1
AROM = CHG + len(CHARGES)
HS = AROM + 1
HYB = HS + MAX_HYDROGENS + 1
RING = NUM_NODE_FEATURES - 1
# bond feature columns
SINGLE, DOUBLE, TRIPLE, AROMATIC, OTHER, CONJ, BRING = range(7)

MOLECULES = [
    "CCO",
    "c1ccccc1",
    "CC(=O)Oc1ccccc1C(=O)O",  # aspirin
    "C[N+](C)(C)CC(=O)[O-]",  # zwitterion
    "c1ccc2[nH]ccc2c1",  # indole
    "ClC(Cl)(Cl)C#N",
    "OC1CCC(O)CC1",  # symmetric: tie breaking matters
]


def elements(g: MolGraph) -> list[str]:
    names = [*ELEMENTS, "other"]
    return [names[i] for i in g.x[:, EL:DEG].argmax(1).tolist()]


def column(g: MolGraph, start: int, stop: int) -> list[int]:
    return g.x[:, start:stop].argmax(1).tolist()


def assert_same(a: MolGraph, b: MolGraph) -> None:
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.edge_attr, b.edge_attr)


def explicit_form(mol: Chem.Mol, perm: list[int], kekule: bool) -> tuple[list, list]:
    """atoms/bonds lists of ``mol`` with atom i of the output being atom perm[i] of mol."""
    mol = Chem.Mol(mol)
    if kekule:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    where = {old: new for new, old in enumerate(perm)}
    atoms = []
    for old in perm:
        a = mol.GetAtomWithIdx(old)
        atoms.append(
            {
                "element": a.GetSymbol(),
                "charge": a.GetFormalCharge(),
                "aromatic": a.GetIsAromatic(),
                "hydrogens": a.GetTotalNumHs(),
            }
        )
    bonds = []
    for b in mol.GetBonds():
        order = 1.5 if b.GetIsAromatic() else int(b.GetBondTypeAsDouble())
        bonds.append([where[b.GetBeginAtomIdx()], where[b.GetEndAtomIdx()], order])
    return atoms, bonds


def test_ethanol_values() -> None:
    g = featurize_smiles("CCO")
    assert g.x.shape == (3, NUM_NODE_FEATURES) and g.x.dtype == torch.float32
    assert g.edge_index.shape == (2, 2) and g.edge_index.dtype == torch.long
    assert g.edge_attr.shape == (2, NUM_EDGE_FEATURES) and g.edge_attr.dtype == torch.float32
    assert sorted(elements(g)) == ["C", "C", "O"]
    hs = dict(zip(range(3), column(g, HS, HYB), strict=True))
    degree = column(g, DEG, CHG)
    # the CH3 carbon (degree 1, element C) has 3 H, the CH2 carbon 2, the oxygen 1
    for n, el in enumerate(elements(g)):
        expected = {("C", 1): 3, ("C", 2): 2, ("O", 1): 1}[(el, degree[n])]
        assert hs[n] == expected
    assert g.x[:, AROM].sum() == 0 and g.x[:, RING].sum() == 0
    assert column(g, CHG, AROM) == [CHARGES.index(0)] * 3
    assert g.edge_attr[:, SINGLE].tolist() == [1.0, 1.0]
    assert (g.edge_index[0] < g.edge_index[1]).all()
    assert g.x.sum(1).tolist() == [5.0] * 3  # five one-hots, not aromatic, not in ring
    assert g.x[:, HYB + 2].tolist() == [1.0] * 3  # SP3


def test_benzene_aromatic() -> None:
    g = featurize_smiles("c1ccccc1")
    assert g.num_nodes == 6 and g.num_edges == 6
    assert g.x[:, AROM].tolist() == [1.0] * 6
    assert g.x[:, RING].tolist() == [1.0] * 6
    assert column(g, HS, HYB) == [1] * 6
    assert g.x[:, HYB + 1].tolist() == [1.0] * 6  # SP2
    assert g.edge_attr[:, AROMATIC].tolist() == [1.0] * 6
    assert g.edge_attr[:, CONJ].tolist() == [1.0] * 6
    assert g.edge_attr[:, BRING].tolist() == [1.0] * 6
    # a DAG in canonical order: sorted, lower -> higher, node 0 has no incoming edge
    src, dst = g.edge_index.tolist()
    assert all(s < d for s, d in zip(src, dst, strict=True))
    assert list(zip(src, dst, strict=True)) == sorted(zip(src, dst, strict=True))
    assert 0 not in dst and 5 not in src


def test_charges_and_other_element() -> None:
    g = featurize_smiles("C[N+](C)(C)CC(=O)[O-]")
    charge = {el: [] for el in ("C", "N", "O")}
    for n, el in enumerate(elements(g)):
        charge[el].append(CHARGES[column(g, CHG, AROM)[n]])
    assert charge["N"] == [1] and sorted(charge["O"]) == [-1, 0] and set(charge["C"]) == {0}
    assert column(g, DEG, CHG)[elements(g).index("N")] == 4
    tin = featurize_smiles("C[Sn](C)(C)C")
    assert elements(tin).count("other") == 1
    big = featurize_smiles("[Fe+3]")  # charge +3 is clamped into the +2 bucket
    assert column(big, CHG, AROM) == [len(CHARGES) - 1] and elements(big) == ["other"]


def test_triple_and_double_bonds() -> None:
    g = featurize_smiles("C#CC=C")
    types = sorted(g.edge_attr[:, :5].argmax(1).tolist())
    assert types == [SINGLE, DOUBLE, TRIPLE]
    assert g.x[:, HYB].sum() == 2  # the two sp carbons


def test_explicit_forms_match_smiles() -> None:
    ethanol = featurize_smiles("CCO")
    assert_same(featurize_graph(["C", "C", "O"], [[0, 1, 1], [1, 2, 1]]), ethanol)
    assert_same(featurize_graph(["O", "C", "C"], [(2, 1, 1), (0, 1, 1)]), ethanol)
    dicts = [{"element": "C", "hydrogens": 3}, {"element": "C", "hydrogens": 2}, {"element": "O"}]
    assert_same(featurize_graph(dicts, [[0, 1, 1], [1, 2, 1.0]]), ethanol)
    # hydrogen atoms listed explicitly are folded into their heavy atom's H count
    atoms = ["C", "C", "O", *["H"] * 6]
    bonds = [[0, 1, 1], [1, 2, 1], [0, 3, 1], [0, 4, 1], [0, 5, 1], [1, 6, 1], [1, 7, 1]]
    assert_same(featurize_graph(atoms, [*bonds, [2, 8, 1]]), ethanol)
    benzene = featurize_smiles("c1ccccc1")
    ring = [[i, (i + 1) % 6] for i in range(6)]
    assert_same(featurize_graph(["C"] * 6, [[i, j, 1.5] for i, j in ring]), benzene)
    kekule = [[i, j, 2 if i % 2 == 0 else 1] for i, j in ring]
    assert_same(featurize_graph(["C"] * 6, kekule), benzene)
    acetate = featurize_smiles("CC(=O)[O-]")
    atoms = ["C", "C", "O", {"element": "O", "charge": -1}]
    assert_same(featurize_graph(atoms, [[0, 1, 1], [1, 2, 2], [1, 3, 1]]), acetate)


@pytest.mark.parametrize("smiles", MOLECULES)
def test_atom_order_invariance(smiles: str) -> None:
    mol = Chem.MolFromSmiles(smiles)
    ref = featurize_smiles(smiles)
    variants = []
    for seed in range(4):
        variants.extend(Chem.MolToRandomSmilesVect(mol, 2, randomSeed=seed))
    gen = torch.Generator().manual_seed(len(smiles))
    graphs = [featurize_smiles(s) for s in variants]
    for k in range(4):
        perm = torch.randperm(mol.GetNumAtoms(), generator=gen).tolist()
        shuffled = Chem.RenumberAtoms(mol, perm)
        graphs.append(featurize_smiles(Chem.MolToSmiles(shuffled, canonical=False)))
        atoms, bonds = explicit_form(mol, perm, kekule=k % 2 == 1)
        flip = (torch.rand(len(bonds), generator=gen) < 0.5).tolist()
        bonds = [
            [bonds[b][1], bonds[b][0], bonds[b][2]] if flip[b] else bonds[b]
            for b in torch.randperm(len(bonds), generator=gen).tolist()
        ]
        graphs.append(featurize_graph(atoms, bonds))
    assert len(set(variants)) > 1 or smiles == "c1ccccc1"  # really different atom orders
    for g in graphs:
        assert_same(g, ref)

    model = PLSTMGraph(
        NUM_NODE_FEATURES, dim=16, depth=2, num_heads=2, num_edge_features=NUM_EDGE_FEATURES
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5, generator=gen)  # gate weights start at zero: re-draw all
        alone = [
            model(g.x, g.edge_index, torch.zeros(g.num_nodes, dtype=torch.long), 1, g.edge_attr)
            for g in graphs
        ]
        x, ei, ea, batch = batch_graphs(graphs)
        together = model(x, ei, batch, len(graphs), ea)
    assert torch.isfinite(together).all() and together.std(1).min() > 0
    for out in alone:  # one request per ordering: bit-identical predictions
        assert torch.equal(out, alone[0])
    # in one batch the graphs sit at different positions: equal up to float rounding
    torch.testing.assert_close(together, alone[0].expand_as(together), rtol=1e-5, atol=1e-6)


def test_featurize_mol_matches_smiles_and_removes_hs() -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccncc1O"))
    assert_same(featurize_mol(mol), featurize_smiles("Oc1cccnc1"))
    with pytest.raises(ValueError, match="expected an RDKit molecule"):
        featurize_mol("CCO")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("smiles", "message"),
    [
        ("C1CC", "invalid SMILES 'C1CC'"),
        ("C(C", "invalid SMILES 'C\\(C'"),
        ("CX", "invalid SMILES 'CX'"),
        ("C(C)(C)(C)(C)C", "invalid SMILES"),  # pentavalent carbon
        ("", "smiles: empty string"),
        ("   ", "smiles: empty string"),
        (42, "smiles: expected a string, got int"),
    ],
)
def test_bad_smiles(smiles: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        featurize_smiles(smiles)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("atoms", "bonds", "message"),
    [
        (
            ["C"] * 5,
            [[0, 1, 1], [1, 2, 1], [2, 3, 1], [3, 7, 1]],
            r"bonds\[3\]: atom index 7 out of range \(5 atoms\)",
        ),
        (["C", "C"], [[0, -1, 1]], r"bonds\[0\]: atom index -1 out of range \(2 atoms\)"),
        (["C", "C"], [[0, 1.0, 1]], r"bonds\[0\]: atom index must be an integer"),
        (["C", "C"], [[0, 1]], r"bonds\[0\]: expected \[i, j, order\]"),
        (["C", "C"], ["0-1"], r"bonds\[0\]: expected \[i, j, order\]"),
        (["C", "C"], [[0, 1, 4]], r"bonds\[0\]: bond order must be one of 1, 2, 3, 1.5, got 4"),
        (["C", "C"], [[0, 1, True]], r"bonds\[0\]: bond order must be one of"),
        (["C", "C"], [[1, 1, 1]], r"bonds\[0\]: bond from atom 1 to itself"),
        (
            ["C", "C"],
            [[0, 1, 1], [1, 0, 2]],
            r"bonds\[1\]: duplicate bond between atoms 0 and 1 \(also bonds\[0\]\)",
        ),
        (["C", "Xx"], [], r"atoms\[1\].element: unknown element 'Xx'"),
        (["C", {"charge": 1}], [], r"atoms\[1\].element: unknown element None"),
        (["C", 6], [], r"atoms\[1\]: expected an element symbol or an object, got int"),
        ([{"element": "C", "mass": 12}], [], r"atoms\[0\]: unknown key 'mass'"),
        ([{"element": "N", "charge": "+"}], [], r"atoms\[0\].charge: expected an integer"),
        ([{"element": "N", "hydrogens": -1}], [], r"hydrogens: expected an integer from 0"),
        ([{"element": "C", "hydrogens": 2**40}], [], r"atoms\[0\].hydrogens: expected an integer"),
        ([{"element": "C", "charge": 2**31}], [], r"atoms\[0\].charge: expected an integer fr"),
        ([{"element": "C", "charge": -9}], [], r"atoms\[0\].charge: expected an integer from -8"),
        (["C" * 5000], [], r"atoms\[0\].element: unknown element 'CCCCCCCC'\.\.\. \(5000 char"),
        ([{"element": "N", "aromatic": 1}], [], r"atoms\[0\].aromatic: expected true or false"),
        ([], [], r"atoms: empty list"),
        ("CCO", [], r"atoms: expected a list, got str"),
        (["C"], {"0": 1}, r"bonds: expected a list, got dict"),
        (
            ["C"] * 6,
            [[0, j, 1] for j in range(1, 6)],  # a carbon with five bonds
            r"atoms/bonds: not a valid molecule \(.*valence",
        ),
        # pyrrole without the N-H cannot be kekulized
        (
            ["C", "C", "C", "C", "N"],
            [[i, (i + 1) % 5, 1.5] for i in range(5)],
            r"atoms/bonds: not a valid molecule \(.*kekulize",
        ),
    ],
)
def test_bad_graph(atoms: object, bonds: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        featurize_graph(atoms, bonds)  # type: ignore[arg-type]


def test_batch_graphs() -> None:
    graphs = [featurize_smiles(s) for s in ("CCO", "c1ccccc1", "[Na+]")]
    x, edge_index, edge_attr, batch = batch_graphs(graphs)
    assert x.shape == (10, NUM_NODE_FEATURES) and edge_attr.shape == (8, NUM_EDGE_FEATURES)
    assert batch.tolist() == [0] * 3 + [1] * 6 + [2]
    assert torch.equal(edge_index[:, :2], graphs[0].edge_index)
    assert torch.equal(edge_index[:, 2:], graphs[1].edge_index + 3)
    assert torch.equal(x[3:9], graphs[1].x)
    with pytest.raises(ValueError, match="empty list"):
        batch_graphs([])
    odd = MolGraph(torch.zeros(1, 5), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 7))
    with pytest.raises(ValueError, match=r"graphs\[1\]: has 5 node"):
        batch_graphs([graphs[0], odd])
