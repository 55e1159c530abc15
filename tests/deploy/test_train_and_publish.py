"""deploy/train/train-and-publish.sh, the compose `train` service: it runs ``plstm train`` into
a fresh run directory and publishes the best checkpoint as the model's next version, which the
server's model repository then loads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from app.serving.repository import READY, ModelRepository
from models.checkpoint import save_checkpoint
from models.molecule_features import NUM_EDGE_FEATURES, NUM_NODE_FEATURES
from models.registry import create_model
from tests.deploy import fakes
from tests.deploy.tools import DEPLOY

SCRIPT = DEPLOY / "train" / "train-and-publish.sh"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `plstm train` leaves in <run>/best: a small solubility classifier."""
    torch.manual_seed(0)
    model = create_model(
        "plstm_graph",
        num_classes=3,
        task="classification",
        num_node_features=NUM_NODE_FEATURES,
        num_edge_features=NUM_EDGE_FEATURES,
        dim=16,
        depth=1,
        num_heads=2,
    )
    directory = tmp_path_factory.mktemp("run") / "best"
    save_checkpoint(
        model,
        directory,
        name="plstm_graph",
        labels=["low", "medium", "high"],
        input_spec={"kind": "molecule", "formats": ["smiles"]},
        preprocessing={"featurizer": "models.molecule_features"},
    )
    return directory


def _run(tmp_path: Path, checkpoint: Path, *args: str, fail: bool = False):
    bin_dir = tmp_path / "bin"
    fakes.install(bin_dir, "plstm", fakes.FAKE_PLSTM)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PLSTM_MODEL_REPOSITORY": str(tmp_path / "repo"),
        "PLSTM_RUNS_DIR": str(tmp_path / "runs"),
        "FAKE_LOG": str(tmp_path / "plstm.log"),
        "FAKE_CHECKPOINT": str(checkpoint),
    }
    if fail:
        env["FAKE_TRAIN_FAIL"] = "1"
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_publishes_consecutive_versions_the_server_loads(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "repo" / "solubility" / "notes").mkdir(parents=True)  # not a version: ignored
    for expected in (1, 2):
        result = _run(tmp_path, checkpoint, "solubility-plstm", "solubility", "--epochs", "3")
        assert result.returncode == 0, result.stderr
        assert f"as solubility version {expected}" in result.stdout
    calls = fakes.read_log(tmp_path / "plstm.log")
    assert len(calls) == 2 and calls[0][:2] == ["train", "solubility-plstm"]
    out = Path(calls[0][calls[0].index("--out") + 1])
    assert out.parent == tmp_path / "runs" and out.name.startswith("solubility-plstm-")
    assert calls[0][-2:] == ["--epochs", "3"]
    model_dir = tmp_path / "repo" / "solubility"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "notes"]  # nothing staged
    assert (model_dir / "2" / "model.safetensors").read_bytes() == (
        checkpoint / "model.safetensors"
    ).read_bytes()

    repository = ModelRepository(tmp_path / "repo", device="cpu", warmup=True)
    entries = repository.load_all()
    assert [(e.name, e.version, e.state) for e in entries] == [
        ("solubility", 1, READY),
        ("solubility", 2, READY),
    ]


def test_continues_after_the_highest_version(tmp_path: Path, checkpoint: Path) -> None:
    for version in ("3", "12"):
        (tmp_path / "repo" / "arrow-pointing" / version).mkdir(parents=True)
    result = _run(tmp_path, checkpoint, "arrow-plstm", "arrow-pointing")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "repo" / "arrow-pointing" / "13" / "config.json").is_file()


def test_failed_training_publishes_nothing(tmp_path: Path, checkpoint: Path) -> None:
    result = _run(tmp_path, checkpoint, "solubility-plstm", "solubility", fail=True)
    assert result.returncode == 3
    assert not (tmp_path / "repo" / "solubility").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solubility-plstm"], "usage:"),
        (["solubility-plstm", "solubility", "--out", "x"], "--out is set by this script"),
        (["solubility-plstm", "solubility", "--out=x"], "--out is set by this script"),
        (["solubility-plstm", "../escape"], "invalid model name"),
    ],
)
def test_refuses_bad_arguments(
    tmp_path: Path, checkpoint: Path, args: list[str], message: str
) -> None:
    result = _run(tmp_path, checkpoint, *args)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "plstm.log").exists()  # training never started
