"""Model repository loading (good, corrupt, empty versions), latest versions and the backends."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from app.serving import backends, model_state
from app.serving.model_state import ModelUnavailable
from app.serving.repository import (
    READY,
    UNAVAILABLE,
    ModelNotFound,
    ModelRepository,
    autocast_dtype,
    resolve_device,
)
from models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint
from models.molecule_features import (
    NUM_EDGE_FEATURES,
    NUM_NODE_FEATURES,
    batch_graphs,
    featurize_smiles,
)
from models.registry import create_model

IMG = 16
VISION = {"img_size": IMG, "patch_size": 4, "dim": 16, "depth": 2, "num_heads": 2}
GRAPH = {"num_node_features": NUM_NODE_FEATURES, "num_edge_features": NUM_EDGE_FEATURES}
IMAGE_SPEC = {"kind": "image", "layout": "CHW", "channels": 3, "height": IMG, "width": IMG}
MOLECULE_SPEC = {"kind": "molecule", "num_node_features": NUM_NODE_FEATURES}
METRICS = {"test": {"dataset": "arrow-pointing", "split": "test", "seed": 0, "accuracy": 0.75}}
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "N#CC(C)(C)C"]


def _save(root: Path, name: str, version: int, arch: str, seed: int, **kwargs) -> Path:
    torch.manual_seed(seed)
    model = create_model(arch, **kwargs)
    kind = "image" if arch.startswith(("plstm_vis", "vit")) else "graph"
    return save_checkpoint(
        model,
        root / name / str(version),
        name=arch,
        labels=["a", "b", "c"],
        metrics=METRICS,
        input_spec=IMAGE_SPEC if kind == "image" else MOLECULE_SPEC,
        preprocessing={"rescale": 1 / 255} if kind == "image" else {"featurizer": "x"},
    )


def _tamper(directory: Path) -> None:
    data = bytearray((directory / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (directory / WEIGHTS_FILE).write_bytes(bytes(data))


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_repository")
    _save(root, "vis", 1, "plstm_vis_t", 1, num_classes=3, chunk_size=2, **VISION)
    _save(root, "vis", 2, "plstm_vis_t", 2, num_classes=3, chunk_size=2, **VISION)
    _save(root, "vit", 1, "vit_t", 3, num_classes=3, **VISION)
    _save(root, "mol", 1, "plstm_graph", 4, dim=16, depth=2, num_heads=2, num_classes=3, **GRAPH)
    _tamper(_save(root, "mol", 2, "plstm_graph", 5, dim=16, depth=2, num_heads=2, **GRAPH))
    _save(root, "gin", 1, "gin", 6, dim=16, depth=2, num_classes=3, **GRAPH)
    # "broken": a corrupt version and a newer empty one, nothing ready
    _tamper(_save(root, "broken", 1, "vit_t", 7, num_classes=3, **VISION))
    (root / "broken" / "2").mkdir()
    # a checkpoint one level down inside the version directory is found too
    nested = _save(root, "nested", 1, "vit_t", 8, num_classes=3, **VISION)
    best = nested / "best"
    best.mkdir()
    for file in list(nested.iterdir()):
        if file.is_file():
            file.rename(best / file.name)
    # weights that give NaN outputs load fine but fail the warm-up
    torch.manual_seed(9)
    nan_model = create_model("gin", dim=16, depth=2, num_classes=3, **GRAPH)
    with torch.no_grad():
        nan_model.head[-1].bias.fill_(float("nan"))
    save_checkpoint(nan_model, root / "nan" / "1", name="gin", labels=["a", "b", "c"])
    (root / "vis" / "latest").mkdir()  # not a version: skipped
    (root / "vis" / "007").mkdir()  # leading zeros: skipped
    # every other way a version fails to load
    ambiguous = _save(root, "ambiguous", 1, "gin", 10, dim=16, depth=2, num_classes=3, **GRAPH)
    for copy in ("a", "b"):
        shutil.copytree(ambiguous, ambiguous / copy)
    for file in ambiguous.iterdir():
        if file.is_file():
            file.unlink()
    bad_json = _save(root, "badjson", 1, "gin", 11, dim=16, depth=2, num_classes=3, **GRAPH)
    (bad_json / CONFIG_FILE).write_text("{not json")
    mismatch = _save(root, "mismatch", 1, "gin", 12, dim=16, depth=2, num_classes=3, **GRAPH)
    document = json.loads((mismatch / CONFIG_FILE).read_text())
    document["config"]["num_classes"] = 5  # the weights hold 3 classes
    (mismatch / CONFIG_FILE).write_text(json.dumps(document))
    no_weights = _save(root, "noweights", 1, "gin", 13, dim=16, depth=2, num_classes=3, **GRAPH)
    (no_weights / WEIGHTS_FILE).unlink()
    (root / "empty" / "latest").mkdir(parents=True)  # a model without any version
    return root


@pytest.fixture(scope="module")
def repo(repo_root: Path) -> ModelRepository:
    repository = ModelRepository(repo_root, device="cpu")
    repository.load_all()
    return repository


def test_ready_versions(repo: ModelRepository) -> None:
    ready = {(e.name, e.version) for e in repo.entries() if e.state == READY}
    assert ready == {("vis", 1), ("vis", 2), ("vit", 1), ("mol", 1), ("gin", 1), ("nested", 1)}
    for entry in repo.entries():
        assert (entry.model is None) == (entry.state == UNAVAILABLE)
        assert (entry.reason is None) == (entry.state == READY)


@pytest.mark.parametrize(
    ("name", "version", "reason", "detail"),
    [
        ("mol", 2, model_state.CHECKPOINT_CORRUPT, "sha256"),
        ("broken", 1, model_state.CHECKPOINT_CORRUPT, "sha256"),
        ("broken", 2, model_state.CHECKPOINT_MISSING, "empty version directory (no checkpoint)"),
        ("nan", 1, model_state.WARMUP_FAILED, "warm-up on path 'parallel' gave non-finite"),
        ("ambiguous", 1, model_state.CHECKPOINT_AMBIGUOUS, "several checkpoints ['a', 'b']"),
        ("badjson", 1, model_state.CONFIG_INVALID, "unreadable JSON"),
        ("mismatch", 1, model_state.CHECKPOINT_MISMATCH, "has shape (3,)"),
        ("noweights", 1, model_state.CHECKPOINT_MISSING, "model.safetensors: missing"),
    ],
)
def test_unavailable_reason_class(
    repo: ModelRepository, name: str, version: int, reason: str, detail: str
) -> None:
    entry = repo.get(name, version)
    assert (entry.state, entry.reason) == (UNAVAILABLE, reason)
    assert detail in entry.detail
    assert str(entry.unavailable()) == f"model {name!r} version {version} is unavailable: {reason}"


def test_unsupported_architecture(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "app.serving.repository.architecture_capabilities", lambda architecture: None
    )
    repository = ModelRepository(repo_root, warmup=False)
    repository.load_all()
    entry = repository.get("vit", 1)
    assert entry.reason == model_state.ARCHITECTURE_UNSUPPORTED
    assert entry.detail == "architecture 'vit_t' cannot be served"


def test_a_model_without_versions(repo: ModelRepository) -> None:
    assert repo.unversioned() == ["empty"]
    assert "empty" in repo.names() and repo.versions("empty") == []
    with pytest.raises(ModelUnavailable, match="model 'empty' is unavailable: no_versions"):
        repo.get("empty")


def test_failures_are_logged(repo_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.serving.repository"):
        ModelRepository(repo_root, warmup=False).load_all()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 8  # without warm-up the NaN model is not caught
    assert any(
        "mol version 2 is UNAVAILABLE (checkpoint_corrupt)" in m and "sha256" in m for m in errors
    )
    assert any("empty is UNAVAILABLE (no_versions)" in m for m in errors)
    assert any("007" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_entry_metadata(repo: ModelRepository) -> None:
    vis = repo.get("vis", 1)
    assert vis.kind == "image" and vis.architecture == "plstm_vis_t"
    assert vis.labels == ["a", "b", "c"]
    assert vis.input_spec == IMAGE_SPEC
    assert vis.preprocessing == {"rescale": 1 / 255}
    assert vis.metrics == METRICS
    assert vis.config["patch_size"] == 4 and len(vis.weights_sha256) == 64
    assert repo.get("gin").kind == "graph" and repo.get("mol").kind == "graph"
    assert repo.get("broken", 1).architecture == "vit_t"  # known even though the weights are bad
    assert repo.get("broken", 2).kind is None


def test_latest_version(repo: ModelRepository) -> None:
    assert repo.get("vis").version == 2
    assert repo.get("mol").version == 1  # version 2 is corrupt: the highest READY one
    assert repo.get("broken").version == 2  # nothing ready: the highest
    assert repo.get("nested").ready


def test_not_found(repo: ModelRepository) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        repo.get("nope")
    with pytest.raises(ModelNotFound, match="model 'vis' version 9 not found"):
        repo.get("vis", 9)
    with pytest.raises(KeyError):
        repo.versions("nope")


def test_names(repo: ModelRepository) -> None:
    assert repo.names() == [
        "ambiguous",
        "badjson",
        "broken",
        "empty",
        "gin",
        "mismatch",
        "mol",
        "nan",
        "nested",
        "noweights",
        "vis",
        "vit",
    ]
    assert [e.version for e in repo.versions("vis")] == [1, 2]


def test_bad_repository_and_device(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        ModelRepository(tmp_path / "missing").load_all()
    assert ModelRepository(tmp_path).load_all() == []
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def _images(n: int, size: int = IMG, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_image_paths_match_the_model(repo: ModelRepository) -> None:
    entry = repo.get("vis", 1)
    reference = load_checkpoint(entry.directory).model
    images = _images(3, size=24)  # not the training size: pos-embed resized, chunks padded
    with torch.no_grad():
        expected = reference(images)
    for path in ("parallel", "recurrent", "chunkwise", "auto"):
        out = backends.run_images(entry, images, path)
        assert out.device.type == "cpu" and out.dtype == torch.float32 and out.shape == (3, 3)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        if path != "auto":
            assert {layer.method for layer in entry.model.plstm_layers()} == {path}
    vit = repo.get("vit")
    with torch.no_grad():
        expected = load_checkpoint(vit.directory).model(images)
    torch.testing.assert_close(backends.run_images(vit, images, "auto"), expected)


def test_graph_paths_match_the_model(repo: ModelRepository) -> None:
    graphs = [featurize_smiles(s) for s in SMILES]
    x, edge_index, edge_attr, batch = batch_graphs(graphs)
    for name, paths in (("mol", ("parallel", "recurrent", "auto")), ("gin", ("parallel",))):
        entry = repo.get(name)
        reference = load_checkpoint(entry.directory).model
        with torch.no_grad():
            expected = reference(x, edge_index, batch, len(graphs), edge_attr)
        for path in paths:
            out = backends.run_graphs(entry, graphs, path)
            assert out.shape == (len(SMILES), 3)
            torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        # one graph alone gives its row of the batch
        torch.testing.assert_close(
            backends.run_graphs(entry, graphs[1:2], "parallel"), expected[1:2], rtol=1e-4, atol=1e-5
        )


def test_resolve_path_rules(repo: ModelRepository) -> None:
    vis, vit, mol, gin = (repo.get(n) for n in ("vis", "vit", "mol", "gin"))
    assert backends.model_paths(vis) == ("parallel", "recurrent", "chunkwise")
    assert backends.resolve_path(vis, "auto", 16, chunkwise_tokens=16) == "parallel"
    assert backends.resolve_path(vis, "auto", 17, chunkwise_tokens=16) == "chunkwise"
    assert backends.resolve_path(vis, "auto", 10**6) == "chunkwise"  # settings default 3072
    assert backends.resolve_path(vit, "auto", 10**6) == "parallel"
    assert backends.resolve_path(mol, "auto", 10**6) == "parallel"
    assert backends.resolve_path(mol, "recurrent", 5) == "recurrent"
    assert backends.image_tokens(vis, 24, 32) == 6 * 8
    for entry, path in (
        (vit, "recurrent"),
        (vit, "chunkwise"),
        (gin, "recurrent"),
        (mol, "chunkwise"),
    ):
        with pytest.raises(
            ValueError, match=f"path '{path}' is not available for model '{entry.name}'"
        ):
            backends.resolve_path(entry, path, 4)
    with pytest.raises(ValueError, match="no ONNX session"):
        backends.resolve_path(vis, "onnx", 4)
    with pytest.raises(ValueError, match="path must be one of"):
        backends.resolve_path(vis, "fused", 4)


def test_input_errors(repo: ModelRepository) -> None:
    vis, mol = repo.get("vis"), repo.get("mol")
    with pytest.raises(ValueError, match="not a positive multiple of the patch size"):
        backends.run_images(vis, _images(1, size=18), "parallel")
    with pytest.raises(ValueError, match="float tensor"):
        backends.run_images(vis, torch.zeros(3, IMG, IMG), "parallel")
    with pytest.raises(ValueError, match="not available for model 'vit'"):
        backends.run_images(repo.get("vit"), _images(1), "recurrent")
    good = featurize_smiles("CCO")
    bad = type(good)(good.x[:, :5], good.edge_index, good.edge_attr)
    with pytest.raises(ValueError, match=r"graphs\[1\] has 5 node features"):
        backends.run_graphs(mol, [good, bad], "parallel")
    with pytest.raises(ValueError, match="empty"):
        backends.run_graphs(mol, [], "parallel")
    with pytest.raises(RuntimeError, match="not loaded"):
        backends.run_images(repo.get("broken", 1), _images(1), "parallel")


class _TorchSession:
    """Has ONNX Runtime's InferenceSession interface, computing with a torch model."""

    class _Input:
        name = "images"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def get_inputs(self) -> list:
        return [self._Input()]

    def run(self, outputs: None, feeds: dict) -> list:
        with torch.no_grad():
            return [self.model(torch.from_numpy(feeds["images"])).numpy()]


def test_onnx_extension_point(repo_root: Path) -> None:
    repository = ModelRepository(repo_root, warmup=False)
    repository.load_all()
    vit = repository.get("vit")
    vit.onnx_session = _TorchSession(load_checkpoint(vit.directory).model)
    assert backends.model_paths(vit) == ("parallel", "onnx")
    assert backends.resolve_path(vit, "auto", 16, chunkwise_tokens=16) == "onnx"
    assert backends.resolve_path(vit, "auto", 17, chunkwise_tokens=16) == "parallel"
    images = _images(2, seed=3)
    torch.testing.assert_close(
        backends.run_images(vit, images, "onnx"), backends.run_images(vit, images, "parallel")
    )


@pytest.mark.parametrize(
    ("precision", "device", "weights", "expected"),
    [
        ("auto", "cuda", "bfloat16", torch.bfloat16),
        ("auto", "cuda", "float32", None),
        ("auto", "cpu", "bfloat16", None),
        ("float32", "cuda", "bfloat16", None),
        ("bfloat16", "cpu", "float32", torch.bfloat16),
    ],
)
def test_autocast_dtype_by_setting_device_and_weights(
    precision: str, device: str, weights: str, expected: torch.dtype | None
) -> None:
    assert autocast_dtype(precision, torch.device(device), weights) == expected


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp16", torch.device("cpu"), "float32")


def test_a_repository_refuses_an_unknown_precision_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        ModelRepository(tmp_path, device="cpu", precision="fp16")


@pytest.fixture(scope="module")
def bf16_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    root = tmp_path_factory.mktemp("bf16_repository")
    _save(root, "vis", 1, "plstm_vis_t", 1, num_classes=3, chunk_size=2, **VISION)
    _save(root, "mol", 1, "plstm_graph", 4, dim=16, depth=2, num_heads=2, num_classes=3, **GRAPH)
    repository = ModelRepository(root, device="cpu", precision="bfloat16")
    repository.load_all()
    return repository


def test_bf16_precision_runs_images_under_autocast(
    repo: ModelRepository, bf16_repo: ModelRepository
) -> None:
    images = _images(3, size=24)
    exact = backends.run_images(repo.get("vis", 1), images, "parallel")
    entry = bf16_repo.get("vis")
    out = backends.run_images(entry, images, "parallel")
    assert entry.autocast_dtype == torch.bfloat16 and out.dtype == torch.float32
    assert not torch.equal(out, exact)  # bf16 products: not bit-equal to float32
    torch.testing.assert_close(out, exact, rtol=0.05, atol=0.05)


def test_bf16_precision_runs_graphs_under_autocast(
    repo: ModelRepository, bf16_repo: ModelRepository
) -> None:
    graphs = [featurize_smiles(s) for s in SMILES]
    exact = backends.run_graphs(repo.get("mol", 1), graphs, "parallel")
    out = backends.run_graphs(bf16_repo.get("mol"), graphs, "parallel")
    assert not torch.equal(out, exact)
    torch.testing.assert_close(out, exact, rtol=0.05, atol=0.05)
