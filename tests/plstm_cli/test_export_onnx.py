"""``plstm export-onnx``: writes the ONNX file and its sidecar, ``--check`` prints the max abs
difference of ONNX Runtime vs torch, errors exit with status 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from models.checkpoint import save_checkpoint
from models.molecule_features import NUM_EDGE_FEATURES, NUM_NODE_FEATURES
from models.registry import create_model
from plstm_cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def graph_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model(
        "plstm_graph",
        num_node_features=NUM_NODE_FEATURES,
        num_edge_features=NUM_EDGE_FEATURES,
        num_classes=3,
        dim=16,
        depth=2,
        num_heads=2,
    )
    return save_checkpoint(model, tmp_path_factory.mktemp("mol"), name="plstm_graph", labels=[])


def test_export_with_check(graph_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "exports" / "mol.onnx"
    status = main(
        [
            "export-onnx",
            str(graph_checkpoint),
            "--out",
            str(out),
            "--check",
            "--max-graph-nodes",
            "64",
        ]
    )
    text = capsys.readouterr().out
    assert status == 0, text
    assert f"wrote {out} (plstm_graph, opset 18, graph components up to 64 nodes" in text
    diff = float(re.search(r"vs torch on random inputs: (\S+) \(ok", text).group(1))
    assert 0.0 <= diff <= 1e-3
    info = json.loads(out.with_name("mol.onnx.json").read_text())
    config = json.loads((graph_checkpoint / "config.json").read_text())
    assert info["weights_sha256"] == config["weights_sha256"] and info["squarings"] == 6
    assert not (graph_checkpoint / "model.onnx").exists()  # --out was honoured


def test_help_and_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export-onnx", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--out FILE", "--opset N", "--check", "native resolution", "sidecar"):
        assert word in text
    assert main(["export-onnx", str(tmp_path / "missing")]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-onnx", str(tmp_path), "--opset", "many"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "export-onnx" in capsys.readouterr().out
