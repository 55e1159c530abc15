"""The small ResNet baseline (models.cnn)."""

from __future__ import annotations

import pytest
import torch

from models.cnn import ResNetClassifier
from models.registry import create_model


@pytest.mark.parametrize("size", [96, 192, 40])
def test_any_image_size_gives_one_row_of_logits(size: int) -> None:
    model = ResNetClassifier(num_classes=3, widths=(8, 16), blocks=1).eval()
    assert model(torch.rand(2, 3, size, size)).shape == (2, 3)


def test_default_size_is_within_a_fifth_of_plstm_vis_t_on_arrows() -> None:
    """pLSTM-Vis-T of the arrow runs: 5,638,298 parameters (docs/results/arrow)."""
    count = sum(p.numel() for p in ResNetClassifier().parameters())
    assert count == 6_285_362 and abs(count / 5_638_298 - 1) < 0.2


def test_standardisation_inside_equals_standardised_input() -> None:
    torch.manual_seed(0)
    plain = ResNetClassifier(widths=(8, 16), blocks=1).eval()
    inside = ResNetClassifier(widths=(8, 16), blocks=1, input_mean=0.7, input_std=0.2).eval()
    inside.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(inside(x), plain((x - 0.7) / 0.2))


def test_config_rebuilds_through_the_registry() -> None:
    model = create_model("resnet_small", widths=[8, 16], blocks=1, input_mean=0.5, input_std=0.25)
    twin = create_model("resnet_small", **model.config)
    twin.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 24, 24)
    torch.testing.assert_close(model.eval()(x), twin.eval()(x))
    assert model.config["widths"] == [8, 16]


def test_gradients_reach_every_parameter() -> None:
    model = ResNetClassifier(widths=(8, 16), blocks=2)
    model(torch.rand(4, 3, 32, 32)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"widths": []}, "widths must be positive"), ({"blocks": 0}, "blocks >= 1"),
     ({"input_std": 0.0}, "input_std must be positive")],
)  # fmt: skip
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResNetClassifier(**kwargs)
