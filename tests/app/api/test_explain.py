"""POST /v1/models/{name}/explain and POST /v1/molecules/draw in-process (FastAPI TestClient;
process mode with an engine in one event loop): answers, values, errors, the API key and the
OpenAPI description."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.engine.server import open_engine
from app.main import create_app
from app.serving.repository import build_repository
from tests.app.model_repo import IMG, PATCH, SOL_LABELS, VIS_LABELS, make_repository, png_bytes
from tests.app.started_app import started_app

EXPLAIN = "/v1/models/{}/explain"
DRAW = "/v1/molecules/draw"
GRID = IMG // PATCH


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


def _settings(repo: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"device": "cpu", "warmup": False}
    return Settings(model_repository=repo, **{**values, **overrides})


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(repo))) as c:
        yield c


def _explain_image(client: TestClient, data: bytes, **params: Any):
    files = {"image": ("x.png", data, "image/png")}
    return client.post(EXPLAIN.format("vis"), files=files, params=params)


def _explain_molecule(client: TestClient, body: dict, model: str = "mol", **params: Any):
    return client.post(EXPLAIN.format(model), json=body, params=params)


def _ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


# ---------------------------------------------------------------------------- images


def test_an_image_explanation_has_one_value_per_patch(client: TestClient) -> None:
    body = _ok(_explain_image(client, png_bytes(IMG, IMG, seed=1)))
    assert (body["kind"], body["model"], body["path"], body["resize"]) == (
        "image",
        "vis",
        "parallel",
        "model",
    )
    assert (body["method"], body["steps"], body["patch_size"]) == ("gradient_x_input", 1, PATCH)
    assert [len(row) for row in body["contributions"]] == [GRID] * GRID
    predictions = body["predictions"]
    assert sorted(p["label"] for p in predictions) == sorted(VIS_LABELS)
    assert sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
    target = body["target"]
    assert (target["label"], target["index"]) == (predictions[0]["label"], predictions[0]["index"])
    assert target["probability"] == pytest.approx(predictions[0]["probability"])
    assert body["timings"]["inference_ms"] > 0


def test_native_resize_explains_the_padded_patch_grid(client: TestClient) -> None:
    body = _ok(_explain_image(client, png_bytes(18, 23, seed=2), resize="native"))
    assert body["image_size"] == {"height": 20, "width": 24}
    assert body["original_size"] == {"height": 18, "width": 23}
    assert [len(row) for row in body["contributions"]] == [6] * 5  # 5 rows, 6 columns


class _OnePatchForward:
    """Logits from the darkness of patch (1, 2) only: replaces the model's forward."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        darkness = (1 - images[:, :, 4:8, 8:12]).mean((1, 2, 3))
        return torch.stack([-darkness, darkness], 1)


def test_a_model_that_sees_one_patch_is_explained_by_that_patch(client: TestClient) -> None:
    model = client.app.state.repository.get("vis").model
    model.forward = _OnePatchForward()
    try:
        body = _ok(_explain_image(client, png_bytes(IMG, IMG, seed=3), target="pointing"))
    finally:
        del model.forward
    contributions = torch.tensor(body["contributions"])
    assert contributions[1, 2] > 0
    contributions[1, 2] = 0
    assert contributions.abs().max() == 0
    target = body["target"]  # linear in the pixels: the patch holds the whole difference
    assert body["contributions"][1][2] == pytest.approx(
        target["output"] - target["baseline_output"], rel=1e-4
    )


@pytest.mark.parametrize("target", ["pointing", "1"])
def test_a_target_is_named_by_label_or_index(client: TestClient, target: str) -> None:
    body = _ok(_explain_image(client, png_bytes(IMG, IMG, seed=4), target=target))
    assert (body["target"]["label"], body["target"]["index"]) == ("pointing", 1)


def test_the_two_classes_get_opposite_contributions_of_their_logits(client: TestClient) -> None:
    image = png_bytes(IMG, IMG, seed=5)
    first = _ok(_explain_image(client, image, target="0"))
    second = _ok(_explain_image(client, image, target="1"))
    assert first["target"]["output"] != second["target"]["output"]
    assert first["contributions"] != second["contributions"]


@pytest.mark.parametrize("path", ["recurrent", "chunkwise"])
def test_every_path_gives_the_contributions_of_the_parallel_one(
    client: TestClient, path: str
) -> None:
    image = png_bytes(IMG, IMG, seed=6)
    parallel = torch.tensor(_ok(_explain_image(client, image))["contributions"])
    other = _ok(_explain_image(client, image, path=path))
    assert other["path"] == path
    torch.testing.assert_close(torch.tensor(other["contributions"]), parallel, atol=1e-4, rtol=1e-3)


def test_steps_make_integrated_gradients(client: TestClient) -> None:
    body = _ok(_explain_image(client, png_bytes(IMG, IMG, seed=7), steps=4))
    assert (body["method"], body["steps"]) == ("integrated_gradients", 4)


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"target": "sideways"}, 422, "target: 'sideways' is neither a label of model 'vis'"),
        ({"target": "2"}, 422, "nor an output index below 2"),
        ({"steps": 0}, 422, "steps: Input should be greater than or equal to 1"),
        ({"steps": 33}, 422, "steps: Input should be less than or equal to 32"),
        ({"path": "onnx"}, 422, "path: Input should be 'auto', 'parallel', 'recurrent'"),
        ({"resize": "stretch"}, 422, "resize: Input should be 'model' or 'native'"),
    ],
)
def test_bad_parameters_are_refused(
    client: TestClient, params: dict, status: int, message: str
) -> None:
    assert message in _error(_explain_image(client, png_bytes(IMG, IMG, seed=8), **params), status)


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"content": b"not an image", "headers": {"content-type": "image/png"}}, 400, "corrupt"),
        ({"json": {"smiles": "CCO"}}, 415, "unsupported content type 'application/json'"),
        ({"files": {"picture": ("x.png", b"x", "image/png")}}, 422, "multipart field 'image'"),
    ],
)
def test_bad_images_are_refused(
    client: TestClient, kwargs: dict, status: int, message: str
) -> None:
    assert message in _error(client.post(EXPLAIN.format("vis"), **kwargs), status)


def test_an_unknown_model_is_404(client: TestClient) -> None:
    assert "nope" in _error(client.post(EXPLAIN.format("nope"), json={"smiles": "C"}), 404)


def test_images_over_the_patch_limit_are_refused(repo: Path) -> None:
    with TestClient(create_app(_settings(repo, max_explain_patches=40))) as small:
        assert _explain_image(small, png_bytes(IMG, IMG, seed=9)).status_code == 200  # 16 x 2
        message = _error(_explain_image(small, png_bytes(IMG, IMG, seed=9), steps=2), 422)
    assert message == (
        "image: 16 patches x (steps 2 + 1) exceed the limit of 40 patches per explanation: "
        "use resize=model or fewer steps"
    )


# ---------------------------------------------------------------------------- molecules


def test_a_molecule_explanation_has_one_value_per_atom(client: TestClient) -> None:
    body = _ok(_explain_molecule(client, {"smiles": "OCC(=O)N"}))
    assert (body["kind"], body["task"], body["smiles"]) == ("graph", "classification", "NC(=O)CO")
    assert [a["element"] for a in body["atoms"]] == ["O", "C", "C", "O", "N"]
    assert [a["index"] for a in body["atoms"]] == [0, 1, 2, 3, 4]
    assert sorted(p["label"] for p in body["predictions"]) == sorted(SOL_LABELS)
    assert body["values"] is None
    assert body["target"]["label"] == body["predictions"][0]["label"]
    assert body["svg"].lstrip().startswith("<?xml") and "<svg" in body["svg"]
    assert len(re.findall(r"<ellipse", body["svg"])) == sum(
        a["contribution"] != 0 for a in body["atoms"]
    )


def test_atoms_keep_their_contribution_in_any_order(client: TestClient) -> None:
    """The model sees the canonical graph, so the same atom gets the same value however the
    SMILES lists it; the answer maps it back to the caller's atom order."""
    forward = _ok(_explain_molecule(client, {"smiles": "CCO"}, target="high"))["atoms"]
    backward = _ok(_explain_molecule(client, {"smiles": "OCC"}, target="high"))["atoms"]
    assert [a["element"] for a in backward] == ["O", "C", "C"]
    values = [a["contribution"] for a in forward]
    assert [a["contribution"] for a in backward] == pytest.approx(values[::-1], abs=1e-6)
    assert len(set(values)) == 3


def test_a_molecule_given_as_atoms_and_bonds_is_explained(client: TestClient) -> None:
    body = {"atoms": ["C", "C", "O", "H"], "bonds": [[0, 1, 1], [1, 2, 1], [2, 3, 1]]}
    answer = _ok(_explain_molecule(client, body))
    assert [a["element"] for a in answer["atoms"]] == ["C", "C", "O"]
    assert answer["smiles"] == "CCO"


def test_a_regression_model_explains_its_first_value(client: TestClient) -> None:
    body = _ok(_explain_molecule(client, {"smiles": "CC(=O)O"}, model="solreg", path="recurrent"))
    assert (body["task"], body["path"], body["predictions"]) == ("regression", "recurrent", None)
    assert [v["name"] for v in body["values"]] == ["log_solubility"]
    target = body["target"]
    assert (target["label"], target["index"], target["probability"]) == ("log_solubility", 0, None)
    assert target["output"] == pytest.approx(body["values"][0]["value"])


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"json": {"smiles": "C1CC"}}, 422, "smiles: invalid SMILES 'C1CC'"),
        ({"json": {"smiles": "CCO", "atoms": ["C"]}}, 422, "give either smiles or atoms/bonds"),
        ({"json": {"atoms": ["C"], "bonds": [[0, 1, 1]]}}, 422, "bonds[0]: atom index 1 out"),
        ({"json": {"smiles": "C", "extra": 1}}, 422, "extra: Extra inputs are not permitted"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"content": png_bytes(IMG, IMG, 0), "headers": {"content-type": "image/png"}}, 415, ""),
    ],
)
def test_bad_molecules_are_refused(
    client: TestClient, kwargs: dict, status: int, message: str
) -> None:
    assert message in _error(client.post(EXPLAIN.format("mol"), **kwargs), status)


def test_molecules_over_the_atom_limit_are_refused(repo: Path) -> None:
    with TestClient(create_app(_settings(repo, max_atoms=3))) as small:
        message = _error(_explain_molecule(small, {"smiles": "CCCC"}), 422)
    assert message == "smiles: 4 heavy atoms exceed the limit of 3 per graph"


# ---------------------------------------------------------------------------- drawing


def test_a_drawing_is_svg_with_a_disc_per_weighted_atom(client: TestClient) -> None:
    plain = client.post(DRAW, json={"smiles": "c1ccccc1O"})
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "image/svg+xml"
    assert "<ellipse" not in plain.text and "width='360px'" in plain.text
    weights = [0, 0, 0, 0, 0, -0.5, 1.0]
    body = {"smiles": "c1ccccc1O", "weights": weights, "width": 200, "height": 150}
    coloured = client.post(DRAW, json=body).text
    assert "width='200px'" in coloured and "height='150px'" in coloured
    fills = dict(re.findall(r"<ellipse[^>]*class='atom-(\d+)'[^>]*fill:#(\w{6})", coloured))
    assert sorted(fills) == ["5", "6"]
    red = [int(fills["6"][i : i + 2], 16) for i in (0, 2, 4)]
    assert red == pytest.approx([214, 39, 40], abs=1)  # the full colour at the largest weight
    light_blue = [int(fills["5"][i : i + 2], 16) for i in (0, 2, 4)]
    assert light_blue == pytest.approx([144, 178, 223], abs=1)  # halfway from white


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"smiles": "CCO", "weights": [1, 2]}, "weights: 2 values given for 3 heavy atoms"),
        ({"smiles": "C1CC"}, "smiles: invalid SMILES 'C1CC'"),
        ({"smiles": "C", "width": 10}, "width: Input should be greater than or equal to 64"),
    ],
)
def test_bad_drawing_requests_are_refused(client: TestClient, body: dict, message: str) -> None:
    assert message in _error(client.post(DRAW, json=body), 422)


# ---------------------------------------------------------------------------- key, docs


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        (EXPLAIN.format("mol"), {"json": {"smiles": "CCO"}}),
        (DRAW, {"json": {"smiles": "CCO"}}),
    ],
)
def test_the_api_key_is_required_when_set(repo: Path, url: str, kwargs: dict) -> None:
    with TestClient(create_app(_settings(repo, api_key="s3cret"))) as keyed:
        assert "missing or wrong API key" in _error(keyed.post(url, **kwargs), 401)
        wrong = {"Authorization": "Bearer nope"}
        assert keyed.post(url, headers=wrong, **kwargs).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert keyed.post(url, headers=right, **kwargs).status_code == 200


def test_openapi_documents_the_request_bodies_and_answers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    explain = spec["paths"]["/v1/models/{name}/explain"]["post"]
    content = explain["requestBody"]["content"]
    assert set(content) == {
        "multipart/form-data",
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/bmp",
        "application/octet-stream",
        "application/json",
    }
    assert content["multipart/form-data"]["schema"]["required"] == ["image"]
    reference = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "smiles" in spec["components"]["schemas"][reference]["properties"]
    answer = explain["responses"]["200"]["content"]["application/json"]["schema"]
    kinds = {ref["$ref"].rsplit("/", 1)[1] for ref in answer["oneOf"]}
    assert kinds == {"ImageExplanation", "MoleculeExplanation"}
    assert {"400", "404", "413", "415", "422", "503"} <= set(explain["responses"])
    parameters = {p["name"] for p in explain["parameters"]}
    assert parameters == {"name", "target", "path", "resize", "steps", "version"}
    draw = spec["paths"]["/v1/molecules/draw"]["post"]
    assert "image/svg+xml" in draw["responses"]["200"]["content"]
    assert draw["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "DrawRequest"
    )


# ---------------------------------------------------------------------------- process mode


@pytest.fixture
def socket_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="plstm-test-")  # short: Unix socket paths are limited
    yield str(Path(directory) / "engine.sock")
    shutil.rmtree(directory, ignore_errors=True)


def _answer(response) -> tuple[int, dict]:
    """Status and JSON body without timings (they differ run to run)."""
    return response.status_code, {k: v for k, v in response.json().items() if k != "timings"}


def test_the_engine_process_explains_as_inline_serving(repo: Path, socket_path: str) -> None:
    settings = _settings(repo)
    requests = [
        {"url": EXPLAIN.format("vis"), "files": {"image": ("x.png", png_bytes(IMG, IMG, 10))}},
        {
            "url": EXPLAIN.format("vis"),
            "params": {"target": "0", "steps": 2},
            "files": {"image": ("x.png", png_bytes(IMG, IMG, 11))},
        },
        {"url": EXPLAIN.format("mol"), "json": {"smiles": "c1ccccc1O"}},
        {"url": EXPLAIN.format("solreg"), "json": {"smiles": "CCN"}},
        {"url": EXPLAIN.format("mol"), "json": {"smiles": "C1CC"}},
    ]

    async def main() -> list[tuple[int, dict]]:
        repository = build_repository(settings)
        await asyncio.to_thread(repository.load_all)
        engine = await open_engine(repository, settings, socket_path)
        try:
            worker = create_app(settings, engine_socket=socket_path)
            async with started_app(worker) as (client, _):
                for _ in range(1000):
                    if worker.state.engine.connected:
                        break
                    await asyncio.sleep(0.01)
                return [_answer(await client.post(**request)) for request in requests]
        finally:
            await engine.close()

    through_engine = asyncio.run(main())
    with TestClient(create_app(settings)) as inline:
        expected = [_answer(inline.post(**request)) for request in requests]
    assert [status for status, _ in expected] == [200, 200, 200, 200, 422]
    assert through_engine == expected
