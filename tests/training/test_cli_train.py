"""``plstm train``: help text, argument / environment errors (exit status 2), option resolution,
tiny end-to-end runs of an arrow, a solubility and a TU experiment, and resume through the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models import load_checkpoint
from plstm_cli.main import main as plstm_main
from training.cli import OPTIONS, build_parser, experiment_options, resolve
from training.experiments import EXPERIMENTS, build_run

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_ARROW = [
    "arrow-plstm",
    "--arrow-scale", "0.25", "--dim", "16", "--depth", "2", "--heads", "2",
    "--train-samples", "32", "--val-samples", "16", "--test-samples", "8",
    "--batch-size", "16", "--lr", "3e-3", "--workers", "0", "--device", "cpu",
]  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``plstm train ARGV`` run in this process."""
    try:
        code = plstm_main(["train", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_experiments_and_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    assert out.startswith("usage: plstm train")
    for name, experiment in EXPERIMENTS.items():
        assert name in out and experiment.summary in out
    for option in OPTIONS.values():
        assert option.flag in out and option.env in out
    assert "--resume" in out and "--no-amp" in out and "torchrun" in out
    code, out, _ = _run([], capsys)  # no experiment at all
    assert code == 2
    plstm_help = subprocess.run(
        [sys.executable, "-m", "plstm_cli.main", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plstm_help.returncode == 0 and "train" in plstm_help.stdout


def test_plstm_cli_does_not_import_training() -> None:
    code = (
        "import sys, plstm_cli.main; "
        "bad = [m for m in sys.modules if m == 'training' or m.startswith('training.')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], "invalid choice: 'nope'"),
        (["arrow-vit", "--epochs", "0"], "--epochs: invalid positive integer value: '0'"),
        (["arrow-vit", "--lr", "abc"], "--lr: invalid positive number value: 'abc'"),
        (["arrow-vit", "--tu-root", "somewhere"], "--tu-root do(es) not apply"),
        (["arrow-vit", "--method", "recurrent"], "--method do(es) not apply"),
        (["solubility-gin", "--model-size", "s"], "--model-size do(es) not apply"),
        (["solubility-gin", "--heads", "2"], "--heads do(es) not apply"),
        (["tu-gin"], "needs --tu-root"),
        (["arrow-plstm", "--task", "regression"], "--task do(es) not apply"),
        (["tu-gin", "--tu-root", "x", "--task", "regression"], "solubility only"),
        (["--resume", "/nonexistent/run"], "no run.json"),
        ([], "the experiment is required"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert message in err


def test_runtime_value_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["tu-gin", "--tu-root", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not a directory" in err
    code, _, err = _run([*TINY_ARROW, "--patch-size", "5", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--patch-size 5 does not divide" in err


def test_environment_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLSTM_TRAIN_EPOCHS", "3")
    monkeypatch.setenv("PLSTM_TRAIN_LR", "0.01")
    monkeypatch.setenv("PLSTM_TRAIN_AMP", "0")
    experiment, options = resolve(build_parser().parse_args(["arrow-vit", "--lr", "0.02"]))
    assert experiment == "arrow-vit"
    assert options["epochs"] == 3  # environment over the experiment default (50)
    assert options["lr"] == 0.02  # command line over environment
    assert options["amp"] is False
    assert options["batch_size"] == EXPERIMENTS["arrow-vit"].defaults["batch_size"]
    assert options["workers"] == 4 and options["out"] == "runs/arrow-vit-seed0"
    monkeypatch.setenv("PLSTM_TRAIN_BATCH_SIZE", "many")
    code, _, err = _run(["arrow-vit"], capsys)
    assert code == 2 and "PLSTM_TRAIN_BATCH_SIZE" in err and "'many'" in err
    monkeypatch.setenv("PLSTM_TRAIN_BATCH_SIZE", "8")
    monkeypatch.setenv("PLSTM_TRAIN_EXPORT_DTYPE", "fp8")
    code, _, err = _run(["arrow-vit"], capsys)
    assert code == 2 and "PLSTM_TRAIN_EXPORT_DTYPE" in err


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_arrow_run_and_cli_resume_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = _run(
        [*TINY_ARROW, "--epochs", "2", "--out", str(straight), "--metrics-host", "127.0.0.1",
         "--metrics-port", str(port)],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "2 steps per epoch" in out and "checkpoint:" in out
    assert f"Prometheus metrics on http://127.0.0.1:{port}/metrics" in out
    with socket.socket() as s:  # the exporter was shut down with the run
        s.bind(("127.0.0.1", port))

    code, out, err = _run(
        [*TINY_ARROW, "--epochs", "2", "--max-steps", "2", "--out", str(split)], capsys
    )
    assert code == 0, err
    assert json.loads((split / "last" / "state.json").read_text())["epoch"] == 1
    # the same --out without --resume is refused
    code, _, err = _run([*TINY_ARROW, "--epochs", "2", "--out", str(split)], capsys)
    assert code == 2 and "already holds a run" in err
    code, _, err = _run(["arrow-vit", "--resume", str(split)], capsys)
    assert code == 2 and "is a 'arrow-plstm' run" in err
    # the saved options (model, data, lr, epochs) are restored from run.json
    code, out, err = _run(["--resume", str(split), "--workers", "0"], capsys)
    assert code == 0, err

    a, b = (
        _tensors(straight / "last" / "model.safetensors"),
        _tensors(split / "last" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run = json.loads((split / "run.json").read_text())
    assert run["experiment"] == "arrow-plstm" and run["options"]["dim"] == 16

    loaded = load_checkpoint(straight / "best")
    assert loaded.architecture == "plstm_vis_t" and loaded.config["img_size"] == 48
    assert loaded.config["dim"] == 16 and loaded.labels == ["not_pointing", "pointing"]
    # the arrow defaults: BatchNorm conv stem, BatchNorm head with statistics gathered in training
    assert loaded.config["stem"] == "conv-bn" and loaded.config["head_norm"] == "batch"
    assert int(loaded.model.head_norm.num_batches_tracked) >= 2
    assert set(loaded.metrics) == {"validation", "test", "extrapolation"}
    assert loaded.metrics["extrapolation"]["resolution"] == 96
    assert loaded.metrics["test"]["num_samples"] == 8
    assert loaded.input_spec["patch_size"] == 8
    assert (straight / "best" / "curves.png").is_file()
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in rows] == ["epoch", "epoch", "final"]


def _write_tu(root: Path, num_graphs: int, seed: int) -> None:
    """A TU folder: random trees with 2 node labels; class = majority node label."""
    gen = torch.Generator().manual_seed(seed)
    edges, indicator, node_labels, graph_labels = [], [], [], []
    offset = 0
    for g in range(num_graphs):
        n = int(torch.randint(4, 9, (1,), generator=gen))
        labels = torch.randint(0, 2, (n,), generator=gen).tolist()
        for i in range(1, n):
            j = int(torch.randint(0, i, (1,), generator=gen))
            edges += [(offset + i + 1, offset + j + 1), (offset + j + 1, offset + i + 1)]
        indicator += [g + 1] * n
        node_labels += labels
        graph_labels.append(int(2 * sum(labels) > n))
        offset += n
    root.mkdir(parents=True)
    (root / "TOY_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (root / "TOY_graph_indicator.txt").write_text("".join(f"{g}\n" for g in indicator))
    (root / "TOY_node_labels.txt").write_text("".join(f"{v}\n" for v in node_labels))
    (root / "TOY_graph_labels.txt").write_text("".join(f"{v}\n" for v in graph_labels))


def test_graph_experiments_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_tu(tmp_path / "TOY", 30, seed=4)
    common = [
        "--dim",
        "16",
        "--depth",
        "2",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]
    code, _, err = _run(
        ["tu-plstm", "--tu-root", str(tmp_path / "TOY"), "--heads", "2", "--method", "recurrent",
         *common, "--out", str(tmp_path / "tu")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    loaded = load_checkpoint(tmp_path / "tu" / "best")
    assert loaded.architecture == "plstm_graph" and loaded.config["method"] == "recurrent"
    assert loaded.labels == ["0", "1"] and loaded.metrics["validation"]["dataset"] == "TU:TOY"
    assert loaded.metrics["validation"]["num_samples"] == 3  # 10 % of 30
    assert loaded.metrics["test"]["num_samples"] == 3

    code, _, err = _run(
        ["solubility-gin", "--task", "regression", "--train-samples", "48", "--val-samples",
         "16", "--test-samples", "16", *common, "--out", str(tmp_path / "sol")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    loaded = load_checkpoint(tmp_path / "sol" / "best")
    assert loaded.labels == ["log_solubility"] and loaded.config["task"] == "regression"
    validation = loaded.metrics["validation"]
    assert validation["rmse"] > 0 and validation["loss"] == pytest.approx(validation["rmse"] ** 2)
    assert loaded.metrics["test"]["dataset"] == "solubility"
    assert loaded.input_spec["num_node_features"] == 38


def test_cache_data_and_standardize_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert OPTIONS["cache_data"].flag == "--cache-data" and OPTIONS["cache_data"].boolean
    assert OPTIONS["standardize"].flag == "--standardize" and OPTIONS["standardize"].boolean
    # --standardize defines the model (restored on --resume); --cache-data only this invocation
    assert OPTIONS["standardize"].per_run and not OPTIONS["cache_data"].per_run
    _, options = resolve(build_parser().parse_args(["arrow-vit"]))
    assert options["cache_data"] is None and options["standardize"] is None  # experiment default
    argv = ["arrow-vit", "--no-cache-data", "--standardize"]
    _, options = resolve(build_parser().parse_args(argv))
    chosen = experiment_options(options)
    assert chosen.cache_data is False and chosen.standardize is True
    monkeypatch.setenv("PLSTM_TRAIN_CACHE_DATA", "1")
    monkeypatch.setenv("PLSTM_TRAIN_STANDARDIZE", "off")
    _, options = resolve(build_parser().parse_args(["arrow-plstm"]))
    assert options["cache_data"] is True and options["standardize"] is False
    _, options = resolve(build_parser().parse_args(["arrow-plstm", "--no-cache-data"]))
    assert options["cache_data"] is False  # command line over environment
    monkeypatch.delenv("PLSTM_TRAIN_CACHE_DATA")
    monkeypatch.delenv("PLSTM_TRAIN_STANDARDIZE")
    for flag in ("--cache-data", "--no-standardize"):
        code, _, err = _run(["solubility-gin", flag], capsys)
        assert code == 2 and f"{flag.replace('no-', '')} do(es) not apply" in err


def test_stem_and_head_norm_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert OPTIONS["stem"].choices == ("conv", "conv-bn", "patch") and OPTIONS["stem"].per_run
    assert OPTIONS["head_norm"].choices == ("batch", "token-batch", "none")
    assert OPTIONS["head_norm"].per_run
    _, options = resolve(build_parser().parse_args(["arrow-plstm"]))
    assert options["stem"] is None and options["head_norm"] is None  # experiment default
    tiny = [
        "--dim", "16", "--depth", "1", "--heads", "2", "--train-samples", "8",
        "--val-samples", "8", "--test-samples", "0", "--no-cache-data", "--no-standardize",
    ]  # fmt: skip
    argv = ["arrow-plstm", "--stem", "patch", "--head-norm", "none", *tiny]
    _, options = resolve(build_parser().parse_args(argv))
    torch.manual_seed(0)
    config = build_run("arrow-plstm", experiment_options(options)).model.config
    assert config["stem"] == "patch" and config["head_norm"] == "none"
    monkeypatch.setenv("PLSTM_TRAIN_STEM", "patch")
    _, options = resolve(build_parser().parse_args(["arrow-vit", *tiny]))
    config = build_run("arrow-vit", experiment_options(options)).model.config
    assert config["stem"] == "patch" and config["head_norm"] == "batch"
    _, options = resolve(build_parser().parse_args(["arrow-vit", "--stem", "conv"]))
    assert options["stem"] == "conv"  # command line over environment
    monkeypatch.setenv("PLSTM_TRAIN_HEAD_NORM", "layer")
    code, _, err = _run(["arrow-vit"], capsys)
    assert code == 2 and "PLSTM_TRAIN_HEAD_NORM must be one of" in err
    monkeypatch.delenv("PLSTM_TRAIN_STEM")
    monkeypatch.delenv("PLSTM_TRAIN_HEAD_NORM")
    code, _, err = _run(["arrow-vit", "--stem", "conv3"], capsys)
    assert code == 2 and "invalid choice: 'conv3'" in err
    for argv, flag in (
        (["solubility-gin", "--stem", "conv"], "--stem"),
        (["tu-plstm", "--tu-root", "x", "--head-norm", "batch"], "--head-norm"),
    ):
        code, _, err = _run(argv, capsys)
        assert code == 2 and f"{flag} do(es) not apply" in err


def test_a_lone_last_training_sample_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 33 samples in batches of 16 leave one: BatchNorm (head_norm "batch") cannot train on it
    argv = [*TINY_ARROW, "--train-samples", "33", "--epochs", "1", "--test-samples", "0"]
    code, out, err = _run([*argv, "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert "2 steps per epoch" in out
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows[-1]["step"] == 2


SMALL_ARROW_FLAGS = [
    "--dim", "16", "--heads", "2", "--train-samples", "8", "--val-samples", "8",
    "--test-samples", "0", "--no-cache-data", "--no-standardize",
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["arrow-vit", "--depth", "1"], {"pooling": "mean", "depth": 1}),
        (["arrow-vit", "--depth", "1", "--pooling", "corners"], {"pooling": "corners"}),
        (["arrow-plstm", "--depth", "1"], {"pooling": "corners"}),
        (["arrow-plstm", "--depth", "1", "--pooling", "mean"], {"pooling": "mean"}),
        (["arrow-vit", "--depth", "0"], {"depth": 0}),
        (["arrow-vit", "--depth", "1", "--head-norm", "token-batch"], {"head_norm": "token-batch"}),
    ],
    ids=["vit-default", "vit-corners", "plstm-default", "plstm-mean", "no-blocks", "token-batch"],
)
def test_arrow_pooling_depth_and_head_norm_reach_the_model(argv: list[str], expected: dict) -> None:
    _, options = resolve(build_parser().parse_args([*argv, *SMALL_ARROW_FLAGS]))
    torch.manual_seed(0)
    config = build_run(argv[0], experiment_options(options)).model.config
    assert {key: config[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["solubility-plstm", "--depth", "0"], "--depth must be positive"),
        (["solubility-plstm", "--pooling", "mean"], "--pooling do(es) not apply"),
        (["arrow-vit", "--pooling", "max"], "invalid choice: 'max'"),
        (["arrow-vit", "--patience", "0"], "--patience"),
    ],
    ids=["graph-depth-0", "graph-pooling", "unknown-pooling", "patience-0"],
)
def test_bad_pooling_depth_or_patience_is_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(argv, capsys)
    assert code == 2 and message in err
