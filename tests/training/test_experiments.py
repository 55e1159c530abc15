"""Arrow experiments built by ``build_run``: pixel standardisation recorded in the model config,
cached training / validation images, the conv stem / BatchNorm head defaults, and options that
only apply to arrow experiments (or to its token models: not the CNN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.backbone import BatchNormConvStem, PatchEmbed
from models.cnn import ResNetClassifier
from training.data.arrows import TRAIN_SEED, render_sample
from training.experiments import ExperimentOptions, build_run, check_options, get_experiment
from training.loop import RunSpec

SMALL = {"train_samples": 64, "val_samples": 32, "test_samples": 0}


def _build(**options: bool | None) -> RunSpec:
    torch.manual_seed(0)
    return build_run("arrow-vit", ExperimentOptions(**SMALL, **options))


def test_standardisation_uses_the_training_pixels() -> None:
    spec = _build(cache_data=False)
    pixels = np.stack([render_sample(TRAIN_SEED, i, 96, 0.5)[0] for i in range(64)]) / 255.0
    config = spec.model.config
    assert config["input_mean"] == pytest.approx(pixels.mean(), abs=1e-6)
    assert config["input_std"] == pytest.approx(pixels.std(), abs=1e-6)
    # white background: mostly ones, so the mean is high and the std well below 0.5
    assert 0.8 < config["input_mean"] < 1.0 and 0.05 < config["input_std"] < 0.4
    assert (spec.model.input_mean, spec.model.input_std) == (
        config["input_mean"],
        config["input_std"],
    )
    assert not spec.train_set.cached and not spec.val_set.cached
    assert len(spec.train_set) == 64 and len(spec.val_set) == 32 and spec.test_sets == {}


def test_standardize_off_keeps_the_identity() -> None:
    config = _build(cache_data=False, standardize=False).model.config
    assert config["input_mean"] == 0.0 and config["input_std"] == 1.0


@pytest.mark.parametrize("cache_data", [True, None])
def test_cached_data_by_option_and_by_default(cache_data: bool | None) -> None:
    spec = _build(cache_data=cache_data)
    assert spec.train_set.cached and spec.val_set.cached
    for index in (0, 63):
        image, label = spec.train_set[index]
        expected, expected_label, _ = render_sample(TRAIN_SEED, index, 96, 0.5)
        assert torch.equal(image[0], torch.from_numpy(expected).float() / 255)
        assert label == expected_label


@pytest.mark.parametrize("name", ["solubility-gin", "solubility-plstm", "tu-gin", "tu-plstm"])
@pytest.mark.parametrize("option", ["cache_data", "standardize"])
@pytest.mark.parametrize("value", [True, False])
def test_arrow_only_options_are_refused_for_graphs(name: str, option: str, value: bool) -> None:
    options = ExperimentOptions(**{option: value})
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"{flag} do\\(es\\) not apply"):
        check_options(get_experiment(name), options)
    check_options(get_experiment("arrow-plstm"), ExperimentOptions(**{option: value}))


# tiny and lazy: no images are rendered to build these
TINY_MODEL = {
    "dim": 16,
    "depth": 1,
    "heads": 2,
    "train_samples": 8,
    "val_samples": 8,
    "test_samples": 0,
    "cache_data": False,
    "standardize": False,
}


@pytest.mark.parametrize("name", ["arrow-plstm", "arrow-vit"])
def test_arrow_models_default_to_the_conv_stem_and_batch_head(name: str) -> None:
    torch.manual_seed(0)
    model = build_run(name, ExperimentOptions(**TINY_MODEL)).model
    assert model.config["stem"] == "conv-bn" and model.config["head_norm"] == "batch"
    assert type(model.patch_embed) is BatchNormConvStem
    assert isinstance(model.head_norm, torch.nn.BatchNorm1d)


@pytest.mark.parametrize("name", ["arrow-plstm", "arrow-vit"])
def test_arrow_stem_and_head_norm_options_reach_the_model(name: str) -> None:
    torch.manual_seed(0)
    options = ExperimentOptions(**TINY_MODEL, stem="patch", head_norm="none")
    model = build_run(name, options).model
    assert model.config["stem"] == "patch" and model.config["head_norm"] == "none"
    assert type(model.patch_embed) is PatchEmbed
    assert isinstance(model.head_norm, torch.nn.Identity)
    mixed = build_run(name, ExperimentOptions(**TINY_MODEL, head_norm="none")).model
    assert mixed.config["stem"] == "conv-bn" and mixed.config["head_norm"] == "none"


@pytest.mark.parametrize("name", ["solubility-gin", "solubility-plstm", "tu-gin", "tu-plstm"])
@pytest.mark.parametrize(("option", "value"), [("stem", "conv"), ("head_norm", "batch")])
def test_stem_and_head_norm_are_refused_for_graphs(name: str, option: str, value: str) -> None:
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"{flag} do\\(es\\) not apply"):
        check_options(get_experiment(name), ExperimentOptions(**{option: value}))


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("stem", "conv3", r"--stem must be one of \['patch', 'conv', 'conv-bn'\], got 'conv3'"),
        ("head_norm", "layer", r"--head-norm must be one of .*'none', 'batch'.*, got 'layer'"),
    ],
)
def test_bad_stem_and_head_norm_values_are_refused(option: str, value: str, match: str) -> None:
    for name in ("arrow-plstm", "arrow-vit"):
        with pytest.raises(ValueError, match=match):
            check_options(get_experiment(name), ExperimentOptions(**{option: value}))
        with pytest.raises(ValueError, match=match):
            build_run(name, ExperimentOptions(**TINY_MODEL, **{option: value}))


def test_arrow_cnn_builds_the_small_resnet_with_the_pixel_statistics() -> None:
    torch.manual_seed(0)
    spec = build_run("arrow-cnn", ExperimentOptions(**SMALL))
    assert spec.model_name == "resnet_small" and isinstance(spec.model, ResNetClassifier)
    assert spec.model.config["input_mean"] == _build().model.config["input_mean"]
    assert spec.model(torch.rand(2, 3, 96, 96)).shape == (2, 2)


@pytest.mark.parametrize(
    ("option", "value"),
    [("stem", "patch"), ("head_norm", "none"), ("pooling", "mean"), ("model_size", "s"),
     ("dim", 64), ("depth", 2), ("heads", 2), ("method", "recurrent")],
)  # fmt: skip
def test_token_model_options_are_refused_for_the_cnn(option: str, value: object) -> None:
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"{flag} do\\(es\\) not apply"):
        check_options(get_experiment("arrow-cnn"), ExperimentOptions(**{option: value}))
