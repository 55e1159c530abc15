"""models.attribution: contributions per image patch and per graph node — where they land,
that they add up (exactly for linear models, in the limit of steps for others), the explained
output, shapes on the real networks, and refused arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.attribution import MAX_STEPS, graph_node_contributions, image_patch_contributions
from models.molecule_features import batch_graphs, featurize_smiles
from models.registry import create_model

PATCH = 4
WHITE = torch.ones(3, 1, 1)


class OnePatch(nn.Module):
    """Logits [B,2] from the pixels of one patch only: (row, column) of the patch grid;
    output 1 is the patch's darkness squared (non-linear), output 0 its negative."""

    def __init__(self, row: int, column: int) -> None:
        super().__init__()
        self.rows = slice(row * PATCH, (row + 1) * PATCH)
        self.columns = slice(column * PATCH, (column + 1) * PATCH)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        darkness = (1 - images[:, :, self.rows, self.columns]).mean((1, 2, 3))
        return torch.stack([-(darkness**2), darkness**2], 1)


class LinearImage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(2, 3 * 16 * 16, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight.T


def _images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("row", "column"), [(0, 0), (1, 2), (3, 3)])
def test_a_model_that_sees_one_patch_gets_all_of_it_there(row: int, column: int) -> None:
    result = image_patch_contributions(OnePatch(row, column), _images(), WHITE, PATCH)
    contributions = result.contributions
    assert contributions.shape == (2, 4, 4)
    assert (contributions[:, row, column] > 0).all()
    others = contributions.clone()
    others[:, row, column] = 0
    assert others.abs().max() == 0


def test_gradient_x_input_adds_up_exactly_for_a_linear_model() -> None:
    result = image_patch_contributions(LinearImage(), _images(), WHITE, PATCH)
    total = result.contributions.sum((1, 2))
    difference = (result.outputs - result.baseline_outputs).gather(1, result.targets[:, None])
    torch.testing.assert_close(total, difference[:, 0], rtol=1e-4, atol=1e-4)


def _total_and_difference(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    result = image_patch_contributions(OnePatch(1, 1), _images(), WHITE, PATCH, steps=steps)
    difference = (result.outputs - result.baseline_outputs)[torch.arange(2), result.targets]
    return result.contributions.sum((1, 2)), difference


def test_gradient_x_input_is_the_first_order_estimate() -> None:
    total, difference = _total_and_difference(1)
    torch.testing.assert_close(total, 2 * difference)  # d/dα α² at α = 1, for a square


@pytest.mark.parametrize(("steps", "error"), [(8, 1 / 8), (64, 1 / 64)])
def test_integrated_gradients_add_up_as_steps_grow(steps: int, error: float) -> None:
    total, difference = _total_and_difference(steps)
    torch.testing.assert_close(total, (1 + error) * difference)  # right Riemann sum of 2α


def test_the_default_target_is_the_largest_output_and_a_given_one_is_explained() -> None:
    model = OnePatch(0, 0)
    default = image_patch_contributions(model, _images(), WHITE, PATCH)
    assert default.targets.tolist() == [1, 1]
    chosen = image_patch_contributions(model, _images(), WHITE, PATCH, torch.tensor([0, 0]))
    assert chosen.targets.tolist() == [0, 0]
    torch.testing.assert_close(chosen.contributions, -default.contributions)


def test_outputs_are_those_of_the_input_and_of_the_baseline() -> None:
    model = LinearImage()
    images = _images()
    result = image_patch_contributions(model, images, WHITE, PATCH, steps=3)
    torch.testing.assert_close(result.outputs, model(images).detach())
    torch.testing.assert_close(result.baseline_outputs, model(torch.ones_like(images)).detach())


def test_the_model_keeps_no_gradients_and_its_flags() -> None:
    model = LinearImage()
    image_patch_contributions(model, _images(), WHITE, PATCH)
    assert model.weight.grad is None and model.weight.requires_grad
    model.weight.requires_grad_(False)
    image_patch_contributions(model, _images(), WHITE, PATCH)
    assert not model.weight.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be an integer between 1 and"),
        ({"steps": MAX_STEPS + 1}, "steps must be an integer between 1 and"),
        ({"targets": torch.tensor([2, 0])}, "targets must be output indices"),
        ({"targets": torch.tensor([0])}, "targets must have shape [2]"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        image_patch_contributions(OnePatch(0, 0), _images(), WHITE, PATCH, **kwargs)


def test_an_image_off_the_patch_grid_is_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        image_patch_contributions(OnePatch(0, 0), torch.rand(1, 3, 16, 18), WHITE, PATCH)


def test_a_plstm_vision_model_gives_one_value_per_patch() -> None:
    torch.manual_seed(0)
    model = create_model(
        "plstm_vis_t", img_size=16, patch_size=PATCH, num_classes=3, dim=16, depth=2, num_heads=2
    ).eval()
    images = torch.ones(1, 3, 16, 20)
    images[:, :, 4:8, 8:12] = 0.0  # one dark patch on a white (baseline) image
    result = image_patch_contributions(model, images, WHITE, PATCH)
    assert result.contributions.shape == (1, 4, 5)
    assert result.contributions[0, 1, 2] != 0
    result.contributions[0, 1, 2] = 0
    assert result.contributions.abs().max() == 0  # patches equal to the baseline: nothing


class NodeReadout(nn.Module):
    """A graph model whose output is the features of one node of each graph, summed."""

    def __init__(self, node: int) -> None:
        super().__init__()
        self.node = node

    def forward(self, x, edge_index, batch, num_graphs=None, edge_attr=None) -> torch.Tensor:
        first = torch.searchsorted(batch, torch.arange(num_graphs))
        picked = x[first + self.node]
        return torch.stack([picked.sum(1), 2 * picked[:, 0] - picked.sum(1)], 1)


def test_a_graph_model_that_reads_one_node_gets_all_of_it_there() -> None:
    graphs = [featurize_smiles("CCO"), featurize_smiles("c1ccccc1O")]
    x, edge_index, edge_attr, batch = batch_graphs(graphs)
    result = graph_node_contributions(NodeReadout(1), x, edge_index, batch, 2, edge_attr)
    contributions = result.contributions
    assert contributions.shape == (3 + 7,)
    nonzero = torch.nonzero(contributions).flatten().tolist()
    assert nonzero == [1, 3 + 1]
    # linear: the node's share is its whole output over the zero baseline
    torch.testing.assert_close(contributions[[1, 4]], result.outputs[:, 0])
    assert result.baseline_outputs.abs().max() == 0


@pytest.mark.parametrize("steps", [1, 4])
def test_a_plstm_graph_model_gives_one_value_per_atom(steps: int) -> None:
    torch.manual_seed(0)
    graph = featurize_smiles("CC(=O)Oc1ccccc1C(=O)O")
    model = create_model(
        "plstm_graph",
        num_node_features=graph.num_node_features,
        num_edge_features=graph.num_edge_features,
        num_classes=3,
        dim=16,
        depth=2,
        num_heads=2,
    ).eval()
    x, edge_index, edge_attr, batch = batch_graphs([graph])
    result = graph_node_contributions(
        model, x, edge_index, batch, 1, edge_attr, torch.tensor([2]), steps=steps
    )
    assert result.contributions.shape == (graph.num_nodes,)
    assert torch.isfinite(result.contributions).all() and result.contributions.abs().sum() > 0
    assert result.targets.tolist() == [2]
    with torch.no_grad():
        expected = model(x, edge_index, batch, num_graphs=1, edge_attr=edge_attr)
    torch.testing.assert_close(result.outputs, expected, rtol=1e-4, atol=1e-5)
