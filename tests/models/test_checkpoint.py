"""Checkpoints: round trips (fp32 and bf16 weights; the conv stem and BatchNorm head with its
running statistics), the files' contents, sha256 tamper detection, missing files, strict key /
shape matching, save-time validation, and a rebuild in a fresh Python process that has only the
directory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models import (
    CheckpointError,
    LoadedCheckpoint,
    PLSTMVision,
    ViT,
    checkpoint,
    create_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
)
from models.backbone import ConvStem
from tests.models.test_registry import tiny_inputs, tiny_model, tiny_overrides

LABELS = ["a", "b", "c", "d", "e"]
METRICS = {
    "val_accuracy": {"value": 0.875, "dataset": "arrow-pointing", "split": "validation", "seed": 7},
    "ext_accuracy": {
        "value": 0.5,
        "dataset": "arrow-pointing",
        "split": "extrapolation",
        "seed": 7,
        "resolution": 48,
    },
}
INPUT = {"kind": "image", "channels": 3, "height": 32, "width": 32, "patch_size": 8}
PREPROCESSING = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize": "bicubic"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def _save(model, directory: Path, name: str = "plstm_vis_t", **kwargs) -> Path:
    args = {
        "labels": LABELS,
        "metrics": METRICS,
        "input_spec": INPUT,
        "preprocessing": PREPROCESSING,
        **kwargs,
    }
    return save_checkpoint(model, directory, name=name, **args)


@pytest.fixture
def vision_checkpoint(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = tiny_model("plstm_vis_t")
    return model, _save(model, tmp_path / "ckpt", extra={"epoch": 3})


def _logits(model, name: str = "plstm_vis_t", seed: int = 1) -> torch.Tensor:
    with torch.no_grad():
        return model(*tiny_inputs(name, seed=seed))


def test_round_trip_fp32(vision_checkpoint) -> None:
    model, directory = vision_checkpoint
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    loaded = load_checkpoint(directory)
    assert isinstance(loaded, LoadedCheckpoint)
    assert isinstance(loaded.model, PLSTMVision) and not loaded.model.training
    torch.testing.assert_close(_logits(loaded.model), _logits(model), rtol=0, atol=0)
    assert loaded.architecture == "plstm_vis_t"
    assert loaded.config == model.config
    assert loaded.labels == LABELS
    assert loaded.metrics == METRICS
    assert loaded.input_spec == INPUT
    assert loaded.preprocessing == PREPROCESSING
    assert loaded.extra == {"epoch": 3}
    assert loaded.weights_dtype == "float32"

    document = json.loads((directory / "config.json").read_text())
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert document["weights_sha256"] == digest == loaded.weights_sha256
    assert document["format_version"] == 1
    assert document["architecture"] == "plstm_vis_t"
    assert document["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert json.loads((directory / "metrics.json").read_text()) == METRICS


def test_round_trip_bf16_weights(tmp_path: Path) -> None:
    model = tiny_model("vit_t")
    directory = _save(model, tmp_path / "bf16", name="vit_t", dtype=torch.bfloat16)
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    loaded = load_checkpoint(directory)  # float32 by default
    assert loaded.weights_dtype == "bfloat16"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    rounded = create_model("vit_t", **model.config).eval()
    rounded.load_state_dict({k: v.bfloat16().float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(
        _logits(loaded.model, "vit_t"), _logits(rounded, "vit_t"), rtol=0, atol=0
    )
    as_bf16 = load_checkpoint(directory, dtype="bfloat16").model
    assert all(p.dtype == torch.bfloat16 for p in as_bf16.parameters())
    (x,) = tiny_inputs("vit_t", seed=1)
    with torch.no_grad():
        out = as_bf16(x.bfloat16()).float()
    ref = _logits(model, "vit_t")
    assert (out - ref).abs().max() <= 0.1 * ref.abs().max()


def test_round_trip_every_registered_model(tmp_path: Path) -> None:
    for name in list_models():
        model = tiny_model(name)
        directory = save_checkpoint(model, tmp_path / name, name=name, labels=[])
        loaded = load_checkpoint(directory)
        assert loaded.metrics == {} and loaded.labels == []
        got, expected = _logits(loaded.model, name), _logits(model, name)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_tampered_weights_are_detected(vision_checkpoint) -> None:
    _, directory = vision_checkpoint
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor's data: still a loadable file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 .* does not match") as e:
        load_checkpoint(directory)
    assert e.value.problem == checkpoint.CORRUPT


@pytest.mark.parametrize("filename", ["model.safetensors", "config.json", "metrics.json"])
def test_missing_file(vision_checkpoint, filename: str) -> None:
    _, directory = vision_checkpoint
    (directory / filename).unlink()
    with pytest.raises(CheckpointError, match=rf"{filename}: missing checkpoint file") as e:
        load_checkpoint(directory)
    assert e.value.problem == checkpoint.MISSING


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")


def _rewrite_weights(directory: Path, state: dict) -> None:
    """Replace the weights and record their sha256, so only the strict key check can object."""
    weights = directory / "model.safetensors"
    save_file(state, str(weights))
    config = json.loads((directory / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (directory / "config.json").write_text(json.dumps(config))


def test_strict_keys(vision_checkpoint) -> None:
    model, directory = vision_checkpoint
    state = {k: v.clone() for k, v in model.state_dict().items()}
    extra = dict(state, **{"blocks.9.mixer.q_proj.weight": torch.zeros(2, 2)})
    _rewrite_weights(directory, extra)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['blocks\.9\.mixer"):
        load_checkpoint(directory)

    fewer = {k: v for k, v in state.items() if k != "head.bias"}
    _rewrite_weights(directory, fewer)
    with pytest.raises(CheckpointError, match=r"missing keys \['head\.bias'\]"):
        load_checkpoint(directory)

    wrong = dict(state, **{"head.bias": torch.zeros(7)})
    _rewrite_weights(directory, wrong)
    with pytest.raises(CheckpointError, match=r"'head\.bias' has shape \(7,\)") as e:
        load_checkpoint(directory)
    assert e.value.problem == checkpoint.MISMATCH


def test_bad_config_json(vision_checkpoint) -> None:
    _, directory = vision_checkpoint
    path = directory / "config.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "format_version": 2}))
    with pytest.raises(CheckpointError, match="format_version 2 is not supported"):
        load_checkpoint(directory)
    path.write_text(json.dumps({**document, "architecture": "plstm_vis_xl"}))
    with pytest.raises(CheckpointError, match="cannot rebuild 'plstm_vis_xl'") as e:
        load_checkpoint(directory)
    assert e.value.problem == checkpoint.INVALID_METADATA
    path.write_text(json.dumps({**document, "config": {**document["config"], "widht": 3}}))
    with pytest.raises(CheckpointError, match="widht"):
        load_checkpoint(directory)
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: unreadable JSON"):
        load_checkpoint(directory)


def test_save_validates_its_arguments(tmp_path: Path) -> None:
    model = tiny_model("vit_t")
    cases = [
        ({"name": "no_such_model"}, "unknown model"),
        ({"name": "plstm_vis_t"}, "model is a ViT but 'plstm_vis_t' builds a PLSTMVision"),
        ({"labels": ["x", "y"]}, "2 labels for a model with 5 outputs"),
        ({"labels": "abcde"}, "labels must be a sequence of strings"),
        ({"metrics": {"acc": {"value": 1.0, "dataset": "d", "split": "test"}}}, r"\['seed'\]"),
        ({"extra": {"bad": float("nan")}}, "extra must be JSON-serialisable"),
        ({"input_spec": {"size": object()}}, "input_spec must be JSON-serialisable"),
        ({"dtype": torch.int8}, "dtype must be one of"),
    ]
    for kwargs, match in cases:
        args = {"name": "vit_t", "labels": LABELS, **kwargs}
        with pytest.raises(ValueError, match=match):
            save_checkpoint(model, tmp_path / "never", **args)
    assert not (tmp_path / "never").exists()  # nothing written before validation passed


def test_rebuild_in_a_fresh_process(tmp_path: Path) -> None:
    """Only the directory crosses over: a new interpreter rebuilds and runs the model."""
    model = tiny_model("plstm_vis_t", seed=21)
    directory = _save(model, tmp_path / "ckpt")
    (x,) = tiny_inputs("plstm_vis_t", seed=22)
    save_file({"x": x}, str(tmp_path / "input.safetensors"))
    del model
    script = (
        "import sys, torch\n"
        "from safetensors.torch import load_file, save_file\n"
        "from models import load_checkpoint\n"
        "ckpt = load_checkpoint(sys.argv[1])\n"
        "x = load_file(sys.argv[2])['x']\n"
        "with torch.no_grad():\n"
        "    save_file({'logits': ckpt.model(x)}, sys.argv[3])\n"
    )
    out = tmp_path / "out.safetensors"
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(directory),
            str(tmp_path / "input.safetensors"),
            str(out),
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with safe_open(str(out), framework="pt") as f:
        remote = f.get_tensor("logits")
    local = load_checkpoint(directory).model
    with torch.no_grad():
        torch.testing.assert_close(remote, local(x), rtol=0, atol=0)
    assert remote.shape == (2, 5) and torch.isfinite(remote).all()


def test_set_method_is_saved(tmp_path: Path) -> None:
    model = tiny_model("plstm_vis_t")
    model.set_method("recurrent")
    loaded = load_checkpoint(_save(model, tmp_path / "rec"))
    assert loaded.model.method == "recurrent"
    assert all(layer.method == "recurrent" for layer in loaded.model.plstm_layers())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's first import
def test_wrappers_are_unwrapped(tmp_path: Path) -> None:
    model = tiny_model("vit_t")
    for i, wrapped in enumerate((torch.nn.DataParallel(model), torch.compile(model))):
        loaded = load_checkpoint(_save(wrapped, tmp_path / f"w{i}", name="vit_t"))
        assert loaded.model.state_dict().keys() == model.state_dict().keys()
        torch.testing.assert_close(
            _logits(loaded.model, "vit_t"), _logits(model, "vit_t"), rtol=0, atol=0
        )


def test_vit_round_trip_gives_a_vit(tmp_path: Path) -> None:
    model = tiny_model("vit_t")
    loaded = load_checkpoint(_save(model, tmp_path / "vit", name="vit_t"))
    assert type(loaded.model) is ViT


@pytest.mark.parametrize("name", ["plstm_vis_t", "vit_t"])
def test_conv_stem_and_batch_head_round_trip(tmp_path: Path, name: str) -> None:
    torch.manual_seed(30)
    model = create_model(name, **tiny_overrides(name), stem="conv", head_norm="batch")
    gen = torch.Generator().manual_seed(31)
    bn = model.head_norm
    with torch.no_grad():
        for p in model.parameters():  # generic weights, gates and BatchNorm affine included
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
        bn.num_batches_tracked.fill_(11)
    model.eval()
    loaded = load_checkpoint(_save(model, tmp_path / "ckpt", name=name))
    assert loaded.config["stem"] == "conv" and loaded.config["head_norm"] == "batch"
    assert type(loaded.model.patch_embed) is ConvStem
    restored = loaded.model.head_norm
    assert isinstance(restored, torch.nn.BatchNorm1d) and not restored.training
    for key in ("running_mean", "running_var", "weight", "bias", "num_batches_tracked"):
        assert torch.equal(getattr(restored, key), getattr(bn, key)), key
    torch.testing.assert_close(_logits(loaded.model, name), _logits(model, name), rtol=0, atol=0)
    # the statistics are used: a fresh BatchNorm (mean 0, var 1) gives other logits
    fresh = create_model(name, **loaded.config).eval()
    state = {k: v for k, v in model.state_dict().items() if "head_norm.running" not in k}
    fresh.load_state_dict(state, strict=False)
    assert not torch.allclose(_logits(fresh, name), _logits(model, name), atol=1e-3)
