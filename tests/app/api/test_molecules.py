"""Request graphs and inference-protocol tensors → model inputs (app.api.molecules)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from app.api.body_decoding import DecodedTensor
from app.api.molecules import (
    InvalidGraph,
    InvalidTensor,
    InvalidTensorValue,
    featurize_input,
    graphs_from_request,
    graphs_from_tensor,
    images_from_tensor,
    smiles_from_tensor,
)
from app.api.schemas.v1 import GraphInput, MoleculeLimits, PredictRequest
from app.api.schemas.v2 import RequestInput
from app.serving.images import ImageSpec, ImageTooLarge, load_image
from models.molecule_features import featurize_graph, featurize_smiles


def _same(a, b) -> None:
    torch.testing.assert_close(a.x, b.x)
    torch.testing.assert_close(a.edge_index, b.edge_index)
    torch.testing.assert_close(a.edge_attr, b.edge_attr)


def _request(*graphs: dict) -> PredictRequest:
    return PredictRequest.model_validate({"graphs": list(graphs)})


def _error(request: PredictRequest, **limits: int) -> str:
    with pytest.raises(InvalidGraph) as err:
        graphs_from_request(request, MoleculeLimits.derived(**limits))
    assert err.value.status_code == 422
    return err.value.message


def test_both_forms_featurize_like_the_model_code():
    atoms = ["C", "C", {"element": "O", "hydrogens": 1}]
    graphs = graphs_from_request(
        _request({"smiles": "c1ccccc1O"}, {"atoms": atoms, "bonds": [[0, 1, 1], [1, 2, 1]]}),
        MoleculeLimits(),
    )
    _same(graphs[0], featurize_smiles("c1ccccc1O"))
    _same(graphs[1], featurize_graph(["C", "C", {"element": "O", "hydrogens": 1}],
                                     [[0, 1, 1], [1, 2, 1]]))  # fmt: skip
    _same(graphs[1], featurize_smiles("CCO"))


def test_errors_name_the_field_path():
    good = {"smiles": "CCO"}
    assert (
        _error(_request(good, good, {"smiles": "C1CC"}))
        == "graphs[2].smiles: invalid SMILES 'C1CC'"
    )
    five = ["C"] * 5
    bonds = [[0, 1, 1], [1, 2, 1], [2, 3, 1], [3, 7, 1]]
    assert (
        _error(_request({"atoms": five, "bonds": bonds}))
        == "graphs[0].bonds[3]: atom index 7 out of range (5 atoms)"
    )
    assert (
        _error(_request(good, {"atoms": ["C", "Xx"]}))
        == "graphs[1].atoms[1].element: unknown element 'Xx'"
    )
    assert _error(_request({"smiles": " "})) == "graphs[0].smiles: empty string"
    assert _error(_request({"atoms": ["C", "C"], "bonds": [[0, 1, 1], [1, 0, 2]]})) == (
        "graphs[0].bonds[1]: duplicate bond between atoms 0 and 1 (also bonds[0])"
    )
    pentavalent = {"atoms": ["C"] * 6, "bonds": [[0, i, 1] for i in range(1, 6)]}
    assert _error(_request(pentavalent)).startswith("graphs[0].atoms/bonds: not a valid molecule")


def test_max_atoms_and_max_graphs():
    heptane = {"smiles": "CCCCCCC"}
    assert len(graphs_from_request(_request(heptane), MoleculeLimits.derived(max_atoms=7))) == 1
    assert _error(_request(heptane), max_atoms=6) == (
        "graphs[0].smiles: 7 heavy atoms exceed the limit of 6 per graph"
    )
    water = {"atoms": ["O", "H", "H"], "bonds": [[0, 1, 1], [0, 2, 1]]}
    one_atom = MoleculeLimits.derived(max_atoms=1)
    assert graphs_from_request(_request(water), one_atom)[0].num_nodes == 1
    ethane = {"atoms": ["C", "C"], "bonds": [[0, 1, 1]]}
    assert _error(_request(water, ethane), max_atoms=1) == (
        "graphs[1].atoms: 2 heavy atoms exceed the limit of 1 per graph"
    )
    assert _error(_request(water, water, water), max_graphs=2) == (
        "graphs: 3 graphs exceed the limit of 2 per request"
    )
    with pytest.raises(InvalidGraph, match=r"^mol\.smiles: 3 heavy atoms exceed"):
        featurize_input(GraphInput(smiles="CCO"), "mol", MoleculeLimits.derived(max_atoms=2))


def _tensor(**fields) -> DecodedTensor:
    return DecodedTensor.of(RequestInput(**fields))


def _smiles_tensor(smiles: list[str], shape: list[int] | None = None) -> DecodedTensor:
    return _tensor(name="smiles", shape=shape or [len(smiles)], datatype="BYTES", data=smiles)


def test_smiles_tensor():
    smiles = ["CCO", "c1ccccc1", "CC(=O)O"]
    for shape in ([3], [3, 1]):
        graphs = graphs_from_tensor(_smiles_tensor(smiles, shape))
        for graph, s in zip(graphs, smiles, strict=True):
            _same(graph, featurize_smiles(s))
    cases = [
        (_smiles_tensor(["CCO", "C1CC"]), {}, "smiles[1]: invalid SMILES 'C1CC'"),
        (_smiles_tensor(["CCCC"]), {"limits": MoleculeLimits.derived(max_atoms=3)},
         "smiles[0]: 4 heavy atoms exceed the limit"),
        (_smiles_tensor(smiles), {"max_batch": 2}, "batch of 3 exceeds the limit of 2"),
        (_smiles_tensor(["C"] * 4, [2, 2]), {}, "expected [B] or [B, 1]"),
        (_smiles_tensor([], [0]), {}, "the batch is empty"),
        (_tensor(name="smiles", shape=[1], datatype="FP32", data=[1.0]), {},
         "datatype FP32 given, graph models take BYTES"),
    ]  # fmt: skip
    for tensor, limits, expected in cases:
        with pytest.raises(InvalidTensor) as err:
            graphs_from_tensor(tensor, **limits)
        assert expected in err.value.message and err.value.status_code == 400
    assert smiles_from_tensor(_smiles_tensor(smiles, [3, 1])) == smiles


SPEC = ImageSpec(height=16, width=16, patch_size=8, grayscale=True)


def _pixel_tensor(pixels: np.ndarray, datatype: str, layout: str = "NCHW") -> DecodedTensor:
    if layout == "NHWC":
        pixels = pixels.transpose(0, 2, 3, 1)
    return _tensor(
        name="images", shape=list(pixels.shape), datatype=datatype, data=pixels.ravel().tolist()
    )


def test_uint8_tensor_matches_the_upload_path_in_both_layouts():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 3, 16, 24), dtype=np.uint8)
    nchw = images_from_tensor(_pixel_tensor(pixels, "UINT8"), SPEC)
    nhwc = images_from_tensor(_pixel_tensor(pixels, "UINT8", "NHWC"), SPEC)
    assert nchw.shape == (2, 3, 16, 24) and nchw.dtype == torch.float32
    torch.testing.assert_close(nchw, nhwc)
    for b in range(2):
        buf = io.BytesIO()
        Image.fromarray(pixels[b].transpose(1, 2, 0)).save(buf, "PNG")
        upload = load_image(buf.getvalue(), SPEC, resize="native").tensor
        torch.testing.assert_close(nchw[b], upload)


def test_fp32_tensor_is_model_input_unchanged():
    rng = np.random.default_rng(1)
    values = rng.random((1, 3, 8, 16)).astype(np.float32)
    out = images_from_tensor(_pixel_tensor(values, "FP32", "NHWC"), SPEC)
    torch.testing.assert_close(out, torch.from_numpy(values))


@pytest.mark.parametrize(
    ("value", "index"), [(3e38, 0), (-1.0, 0), (1.01, 0), (0.5, None), (1.0005, None)]
)
def test_fp32_values_must_be_in_the_model_input_range(value: float, index: int | None):
    values = np.full((1, 3, 8, 8), 0.5, dtype=np.float32)
    values[0, 0, 0, 0] = value
    tensor = _pixel_tensor(values, "FP32")
    if index is None:  # inside the range, or outside by less than the rounding slack
        assert images_from_tensor(tensor, SPEC).shape == (1, 3, 8, 8)
        return
    with pytest.raises(InvalidTensorValue) as err:
        images_from_tensor(tensor, SPEC)
    assert err.value.status_code == 422
    assert err.value.message == (
        f"input 'images': data[{index}] = {value:.7g} is outside the model's input range [0, 1]"
    )


def test_image_tensor_errors():
    rng = np.random.default_rng(2)
    cases = [
        (rng.integers(0, 256, (1, 3, 12, 16)), "UINT8", {},
         "images are 12x16 (HxW); both sides must be positive multiples of the patch size 8"),
        (rng.integers(0, 256, (1, 4, 16, 5)), "UINT8", {}, "has no axis of 3 channels"),
        (rng.integers(0, 256, (3, 16, 16)), "UINT8", {}, "expected [B,3,H,W] (NCHW)"),
        (rng.integers(0, 256, (1, 3, 8, 8)), "INT64", {}, "image models take FP32 or UINT8"),
        (rng.integers(0, 256, (3, 3, 8, 8)), "UINT8", {"max_batch": 2}, "batch of 3 exceeds"),
    ]  # fmt: skip
    for pixels, datatype, limits, expected in cases:
        with pytest.raises(InvalidTensor) as err:
            images_from_tensor(_pixel_tensor(pixels, datatype), SPEC, **limits)
        assert expected in err.value.message, err.value.message
    big = rng.integers(0, 256, (1, 3, 16, 24))
    with pytest.raises(ImageTooLarge, match="384 pixels per image exceed the limit of 383"):
        images_from_tensor(_pixel_tensor(big, "UINT8"), SPEC, max_pixels=383)
