"""Solubility experiments built by ``build_run``: the GIN of Xu et al. at pLSTM-Graph's
parameter count, ``--split`` and ``--edge-features`` reaching data and model, 10-fold
cross-validation of TU folders (``--fold``), refused options."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from training.cli import build_parser, experiment_options, resolve
from training.data.molecules import stratified_folds
from training.experiments import ExperimentOptions, build_run, check_options, get_experiment

SMALL = {"train_samples": 8, "val_samples": 8, "test_samples": 0}


def _parameters(name: str, **options: object) -> int:
    torch.manual_seed(0)
    spec = build_run(name, ExperimentOptions(**SMALL, **options))
    return sum(p.numel() for p in spec.model.parameters())


@pytest.mark.parametrize("edge_features", [None, False])
def test_gin_xu_matches_plstm_graph_in_parameters(edge_features: bool | None) -> None:
    plstm = _parameters("solubility-plstm")
    gin = _parameters("solubility-gin-xu", edge_features=edge_features)
    assert plstm == 477_475
    assert abs(gin - plstm) <= 0.2 * plstm
    assert gin == (484_261 if edge_features is None else 477_813)


@pytest.mark.parametrize(
    ("split", "sizes"),
    [("random", (916, 101, 257)), ("sdf", (922, 103, 257)), ("scaffold", (1019, 127, 128))],
)
def test_split_option_reaches_the_data(split: str, sizes: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    options = ExperimentOptions(dim=8, depth=1, split=split)
    spec = build_run("solubility-gin-xu", options)
    assert (len(spec.train_set), len(spec.val_set), len(spec.test_sets["test"])) == sizes
    assert spec.data_info["val"]["split"] == split


def test_split_defaults_to_random_and_is_a_command_line_option() -> None:
    _, options = resolve(build_parser().parse_args(["solubility-plstm", "--split", "scaffold"]))
    assert experiment_options(options).split == "scaffold"
    _, options = resolve(build_parser().parse_args(["solubility-plstm"]))
    assert options["split"] is None
    spec = build_run("solubility-plstm", ExperimentOptions(**SMALL, dim=8, depth=1, heads=2))
    assert spec.data_info["val"]["split"] == "random"


@pytest.mark.parametrize(("flag", "expected"), [("--edge-features", 7), ("--no-edge-features", 0)])
def test_edge_features_option_reaches_the_model(flag: str, expected: int) -> None:
    _, options = resolve(build_parser().parse_args(["solubility-gin-xu", flag, "--dim", "8"]))
    torch.manual_seed(0)
    chosen = experiment_options(options)
    chosen.train_samples, chosen.val_samples, chosen.test_samples = 8, 8, 0
    model = build_run("solubility-gin-xu", chosen).model
    assert model.config["num_edge_features"] == expected


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("tu-gin-xu", {"split": "scaffold", "tu_root": "x"}, r"--split do\(es\) not apply"),
        ("arrow-vit", {"split": "random"}, r"--split do\(es\) not apply"),
        ("arrow-vit", {"edge_features": False}, r"--edge-features do\(es\) not apply"),
        ("solubility-gin-xu", {"heads": 2}, r"--heads do\(es\) not apply"),
        ("solubility-plstm", {"split": "cluster"}, r"--split must be one of"),
    ],
)
def test_refused_options(name: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_options(get_experiment(name), ExperimentOptions(**options))


def test_stratified_folds_balance_every_class() -> None:
    labels = [0] * 13 + [1] * 27
    folds = stratified_folds(labels, 10, seed=2)
    assert folds == stratified_folds(labels, 10, seed=2)
    assert sorted(Counter(folds).values()) == [4] * 10
    for cls, count in ((0, 13), (1, 27)):
        per_fold = Counter(f for f, label in zip(folds, labels, strict=True) if label == cls)
        assert sum(per_fold.values()) == count
        assert max(per_fold.values()) - min(per_fold.values()) <= 1


def _write_path_graphs(root: Path, count: int) -> None:
    """``count`` path graphs of 3-5 nodes in TU format, labels 0, 1, 0, 1, ..."""
    root.mkdir()
    edges, indicator, first = [], [], 1
    for g in range(count):
        n = 3 + g % 3
        indicator += [g + 1] * n
        edges += [(first + i, first + i + 1) for i in range(n - 1)]
        first += n
    (root / "PATHS_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (root / "PATHS_graph_indicator.txt").write_text("".join(f"{g}\n" for g in indicator))
    (root / "PATHS_graph_labels.txt").write_text("".join(f"{g % 2}\n" for g in range(count)))


def test_ten_fold_cross_validation_partitions_the_graphs(tmp_path: Path) -> None:
    _write_path_graphs(tmp_path / "PATHS", 40)
    parts = []
    for fold in range(10):
        options = ExperimentOptions(tu_root=str(tmp_path / "PATHS"), fold=fold, dim=8, depth=1)
        spec = build_run("tu-gin-xu", options)
        parts.append(
            {
                "train": set(spec.train_set.indices),
                "val": set(spec.val_set.indices),
                "test": set(spec.test_sets["test"].indices),
            }
        )
        assert spec.data_info["test"] == {"split_seed": 0, "folds": 10, "fold": fold}
    for fold, part in enumerate(parts):
        assert len(part["train"]) == 32 and len(part["val"]) == 4 and len(part["test"]) == 4
        assert part["train"] | part["val"] | part["test"] == set(range(40))
        assert part["val"] == parts[(fold + 1) % 10]["test"]
    assert set().union(*(p["test"] for p in parts)) == set(range(40))


def test_fold_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"--fold must be in 0\.\.9, got 10"):
        check_options(get_experiment("tu-plstm"), ExperimentOptions(tu_root="x", fold=10))
