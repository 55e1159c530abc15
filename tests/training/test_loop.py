"""The training loop on a tiny learnable image task: the schedule, optimizer-state round trip,
learning, metrics.jsonl / PNG / Prometheus outputs, the exported checkpoint, and resume
equivalence (at an epoch boundary and inside an epoch)."""

from __future__ import annotations

import itertools
import json
import math
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from models import create_model, load_checkpoint
from training.loop import RunSpec, TrainConfig, Trainer, state_dict_sha256
from training.monitor import MetricsLog, TrainingMetrics, plot_curves
from training.schedule import (
    WarmupCosineSchedule,
    build_optimizer,
    flatten_optimizer_state,
    unflatten_optimizer_state,
    warmup_cosine_factor,
)

EPOCH_KEYS = {
    "event",
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "samples_per_second",
    "elapsed_s",
    "gpu_memory_bytes",
    "best",
}


def _side_task(n: int, seed: int) -> TensorDataset:
    """1×16×16 noise images with a bright 8×8 block in the left (label 0) or right (1) half."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.randn(n, 1, 16, 16, generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    rows = torch.randint(0, 9, (n,), generator=gen)
    for i in range(n):
        col = 8 * int(labels[i])
        images[i, 0, rows[i] : rows[i] + 8, col : col + 8] += 1.5
    return TensorDataset(images, labels)


def _spec(seed: int = 0, drop_path: float = 0.0) -> RunSpec:
    torch.manual_seed(seed)
    model = create_model(
        "vit_t",
        img_size=16,
        patch_size=8,
        in_chans=1,
        num_classes=2,
        dim=16,
        depth=1,
        num_heads=2,
        drop_path_rate=drop_path,
    )
    return RunSpec(
        experiment="side-task",
        model=model,
        model_name="vit_t",
        input_kind="image",
        task="classification",
        labels=["left", "right"],
        dataset="side-task",
        train_set=_side_task(96, seed=1),
        val_set=_side_task(48, seed=2),
        test_sets={"test": _side_task(40, seed=3)},
        input_spec={"kind": "image", "channels": 1, "height": 16, "width": 16},
        preprocessing={"rescale": 1.0},
        data_info={"val": {"resolution": 16}},
    )


def test_warmup_cosine_schedule() -> None:
    factors = [warmup_cosine_factor(s, 4, 20, 1e-3) for s in range(20)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    mid = warmup_cosine_factor(4 + 15 // 2, 4, 20, 0.0)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))

    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, lr=0.1, weight_decay=0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # bias: no decay
    schedule = WarmupCosineSchedule(opt, warmup_steps=4, total_steps=20)
    seen = []
    for _ in range(20):
        seen.append(schedule.get_last_lr()[0])
        schedule.step()
    assert seen == pytest.approx([0.1 * f for f in factors])
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineSchedule(opt, warmup_steps=30, total_steps=20)


def test_optimizer_state_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 5, generator=gen), torch.randn(8, 2, generator=gen)

    def make() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        return model, build_optimizer(model, lr=1e-2, weight_decay=0.1)

    def step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    model_a, opt_a = make()
    for _ in range(3):
        step(model_a, opt_a)
    tensors, document = flatten_optimizer_state(opt_a)
    json.dumps(document, allow_nan=False)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert any(k.endswith(".exp_avg_sq") for k in tensors)

    model_b, opt_b = make()
    model_b.load_state_dict(model_a.state_dict())
    opt_b.load_state_dict(unflatten_optimizer_state(tensors, document))
    assert opt_b.param_groups[0]["betas"] == opt_a.param_groups[0]["betas"]
    step(model_a, opt_a)
    step(model_b, opt_b)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def _read_png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_plot_curves_regression_rows(tmp_path: Path) -> None:
    rows = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_rmse": 1.0 / e,
         "val_rmse": 1.1 / e, "val_accuracy": None, "lr": 1e-3 / e}
        for e in (1, 2, 3)
    ]  # fmt: skip
    width, height = _read_png_size(plot_curves(rows, tmp_path / "c.png", title="t"))
    assert width > 300 and height > 100


def test_trainer_learns_and_writes_outputs(tmp_path: Path) -> None:
    spec = _spec()
    config = TrainConfig(
        epochs=6, batch_size=16, lr=5e-3, weight_decay=0.01, warmup_epochs=1.0, log_every=4
    )
    metrics = TrainingMetrics("side-task", "vit_t")
    port = metrics.serve(0, addr="127.0.0.1")
    trainer = Trainer(spec, config, tmp_path / "run", metrics=metrics, run_config={"x": 1})
    try:
        result = trainer.fit()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scrape = response.read().decode()
    finally:
        metrics.close()

    run = tmp_path / "run"
    rows = MetricsLog(run / "metrics.jsonl").read()
    epochs = [r for r in rows if r["event"] == "epoch"]
    steps = [r for r in rows if r["event"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5, 6]
    assert all(set(r) >= EPOCH_KEYS for r in epochs)
    assert [r["step"] for r in steps] == list(range(4, 37, 4))
    assert {"train_loss", "train_accuracy", "lr", "samples_per_second"} <= set(steps[0])
    assert rows[-1]["event"] == "final" and 0.0 <= rows[-1]["test_accuracy"] <= 1.0
    # it learns: the loss falls and the validation accuracy rises well above chance
    assert epochs[-1]["train_loss"] < 0.6 * epochs[0]["train_loss"]
    assert max(r["val_accuracy"] for r in epochs) >= 0.8  # chance: 0.5
    assert result.best_score == max(r["val_accuracy"] for r in epochs)
    assert epochs[-1]["lr"] == pytest.approx(5e-3 * 1e-3)
    assert all(r["samples_per_second"] > 0 for r in epochs)

    _read_png_size(run / "curves.png")
    _read_png_size(run / "best" / "curves.png")
    assert json.loads((run / "run.json").read_text()) == {"x": 1}

    # the checkpoint rebuilds, and its recorded validation accuracy is reproduced
    loaded = load_checkpoint(run / "best")
    recorded = loaded.metrics["validation"]
    assert recorded["dataset"] == "side-task" and recorded["split"] == "val"
    assert recorded["seed"] == 0 and recorded["resolution"] == 16
    assert recorded["epoch"] == result.best_epoch
    images, labels = spec.val_set.tensors
    with torch.no_grad():
        accuracy = (loaded.model(images).argmax(-1) == labels).sum().item() / len(labels)
    assert accuracy == pytest.approx(recorded["accuracy"], abs=1e-9)
    images, labels = spec.test_sets["test"].tensors
    with torch.no_grad():
        test_accuracy = (loaded.model(images).argmax(-1) == labels).sum().item() / len(labels)
    assert loaded.metrics["test"]["accuracy"] == pytest.approx(test_accuracy, abs=1e-9)
    assert loaded.labels == ["left", "right"]
    assert loaded.input_spec["height"] == 16

    # Prometheus: names and values of the finished run
    values = {}
    for line in scrape.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values["plstm_train_step"] == 36
    assert values["plstm_train_steps_total"] == 36
    assert values["plstm_train_epoch"] == 6
    assert values["plstm_train_learning_rate"] == pytest.approx(5e-6)
    assert values['plstm_train_loss{split="train"}'] == pytest.approx(epochs[-1]["train_loss"])
    assert values['plstm_train_accuracy{split="val"}'] == pytest.approx(epochs[-1]["val_accuracy"])
    assert 0.0 <= values['plstm_train_accuracy{split="test"}'] <= 1.0
    assert values["plstm_train_samples_per_second"] > 0
    assert values['plstm_train_info{experiment="side-task",model="vit_t"}'] == 1
    assert "plstm_train_gpu_memory_bytes" in scrape  # declared; only set on CUDA

    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(_spec(), config, run).fit()


@pytest.mark.parametrize("stop_after", [6, 8], ids=["epoch-boundary", "mid-epoch"])
def test_resume_matches_uninterrupted_run(tmp_path: Path, stop_after: int) -> None:
    config = dict(epochs=2, batch_size=16, lr=3e-3, weight_decay=0.05, seed=7)
    straight = Trainer(_spec(drop_path=0.2), TrainConfig(**config), tmp_path / "a").fit()

    first = Trainer(
        _spec(drop_path=0.2), TrainConfig(**config, max_steps=stop_after), tmp_path / "b"
    )
    assert first.steps_per_epoch == 6
    partial = first.fit()
    assert partial.steps == stop_after
    state = json.loads((tmp_path / "b" / "last" / "state.json").read_text())
    assert state["step"] == stop_after and state["batches_done"] == stop_after - 6 * state["epoch"]
    # a different init: the resumed weights must come from last/
    resumed = Trainer(_spec(seed=5, drop_path=0.2), TrainConfig(**config), tmp_path / "b")
    result = resumed.fit(resume=True)

    assert result.steps == straight.steps == 12
    assert result.weights_sha256 == straight.weights_sha256
    assert result.best_score == straight.best_score
    last_a = load_file(str(tmp_path / "a" / "last" / "optimizer.safetensors"))
    last_b = load_file(str(tmp_path / "b" / "last" / "optimizer.safetensors"))
    assert last_a.keys() == last_b.keys()
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    best_a = load_checkpoint(tmp_path / "a" / "best")
    best_b = load_checkpoint(tmp_path / "b" / "best")
    assert state_dict_sha256(best_a.model) == state_dict_sha256(best_b.model)
    rows_b = MetricsLog(tmp_path / "b" / "metrics.jsonl").read()
    assert [r["epoch"] for r in rows_b if r["event"] == "epoch"][-1] == 2


def test_bf16_export_and_regression_guard(tmp_path: Path) -> None:
    spec = _spec()
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, export_dtype="bf16")
    result = Trainer(spec, config, tmp_path / "run").fit()
    loaded = load_checkpoint(tmp_path / "run" / "best")
    assert loaded.weights_dtype == "bfloat16"
    images, labels = spec.val_set.tensors
    with torch.no_grad():
        accuracy = (loaded.model(images).argmax(-1) == labels).sum().item() / len(labels)
    # the recorded value is re-measured with the rounded weights
    assert loaded.metrics["validation"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert result.metrics["validation"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    with pytest.raises(ValueError, match="export_dtype"):
        TrainConfig(epochs=1, batch_size=8, lr=1e-3, export_dtype="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(epochs=1, batch_size=0, lr=1e-3)


def test_a_closed_trainer_refuses_to_train(tmp_path: Path) -> None:
    trainer = Trainer(_spec(), TrainConfig(epochs=1, batch_size=32, lr=1e-3), tmp_path / "run")
    trainer.close()
    with pytest.raises(RuntimeError, match="closed"):
        trainer.fit()
    assert not (tmp_path / "run" / "run.json").exists()  # nothing was started


@pytest.mark.parametrize(
    ("scores", "patience", "epochs_run"),
    [
        ([0.5, 0.4, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6], 2, 3),
        ([0.5, 0.6, 0.7, 0.5, 0.8, 0.7, 0.7, 0.7], 2, 7),
        ([0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4], 8, 8),
    ],
    ids=["stops-early", "each-improvement-restarts-the-count", "never-before-the-last-epoch"],
)
def test_patience_stops_on_a_validation_plateau(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scores: list[float],
    patience: int,
    epochs_run: int,
) -> None:
    pending = iter(scores)
    monkeypatch.setattr(Trainer, "score", lambda self, summary, prefix="val": next(pending))
    config = TrainConfig(epochs=8, batch_size=32, lr=1e-3, patience=patience)
    result = Trainer(_spec(), config, tmp_path / "run").fit()
    rows = MetricsLog(tmp_path / "run" / "metrics.jsonl").read()
    assert [r["epoch"] for r in rows if r["event"] == "epoch"] == list(range(1, epochs_run + 1))
    assert result.epochs_completed == rows[-1]["epochs_completed"] == epochs_run
    best = max(scores[:epochs_run])
    assert result.best_score == best and result.best_epoch == scores.index(best) + 1


@pytest.mark.parametrize("patience", [0, -1, True, 1.5])
def test_patience_must_be_a_positive_integer(patience: object) -> None:
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(epochs=1, batch_size=1, lr=1e-3, patience=patience)  # type: ignore[arg-type]
