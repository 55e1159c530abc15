"""GINXu (the GIN of Xu et al. 2019): values on a hand-computed graph, the readout over all
layers, ε learnable or fixed, permutation invariance and batch independence in eval mode."""

from __future__ import annotations

import pytest
import torch

from models.gin_xu import GINXu, sum_pool
from models.registry import create_model

BN_SCALE = 1 / (1 + 1e-5)  # two BatchNorms at their initial statistics, each x / sqrt(1 + eps)


def identity_gin(num_edge_features: int = 0, eps: float = 0.5) -> GINXu:
    """One layer, width 2 = the input width, identity Linears, ε = ``eps``, eval mode."""
    model = GINXu(2, dim=2, depth=1, num_edge_features=num_edge_features, learn_eps=True)
    with torch.no_grad():
        for layer in (model.mlps[0][0], model.mlps[0][3]):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
        model.eps.fill_(eps)
        if num_edge_features:
            model.edge_proj[0].weight.fill_(1.0)
            model.edge_proj[0].bias.zero_()
    return model.eval()


# the path 0 - 1 - 2 (given as a DAG 0 -> 1 -> 2; GIN reads it undirected)
X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 1.0]])
EDGES = torch.tensor([[0, 1], [1, 2]])
ONE_GRAPH = torch.zeros(3, dtype=torch.long)


def test_plain_layer_and_readout_by_hand() -> None:
    # z_v = 1.5 x_v + sum of neighbours: z0 = (1.5, 2), z1 = (-2, 4), z2 = (-4.5, 3.5)
    # h = ReLU(z) (identity MLP, BatchNorms at 1 / sqrt(1 + 1e-5) each)
    # readout = [sum x, sum h] = [(-2, 3), (1.5, 9.5) * scale]
    with torch.no_grad():
        features = identity_gin().forward_features(X, EDGES, ONE_GRAPH)
    expected = torch.tensor([[-2.0, 3.0, 1.5 * BN_SCALE, 9.5 * BN_SCALE]])
    torch.testing.assert_close(features, expected)


def test_gine_messages_by_hand() -> None:
    # edge Linear of all ones: edge 0-1 with feature 1 adds (1, 1), edge 1-2 with -2 adds (-2, -2)
    # messages ReLU(x_u + e): to 0: ReLU((0,2)+1) = (1,3); to 1: ReLU((1,0)+1) + ReLU((-3,1)-2)
    # = (2,1); to 2: ReLU((0,2)-2) = (0,0). z = 1 * x + messages (ε = 0):
    # z0 = (2, 3), z1 = (2, 3), z2 = (-3, 1) -> h = (2, 3), (2, 3), (0, 1) -> sum (4, 7)
    edge_attr = torch.tensor([[1.0], [-2.0]])
    with torch.no_grad():
        features = identity_gin(1, eps=0.0).forward_features(X, EDGES, ONE_GRAPH, 1, edge_attr)
    expected = torch.tensor([[-2.0, 3.0, 4.0 * BN_SCALE, 7.0 * BN_SCALE]])
    torch.testing.assert_close(features, expected)


def test_readout_concatenates_every_layer_and_the_input() -> None:
    torch.manual_seed(0)
    model = GINXu(5, dim=8, depth=3).eval()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    edge_index = torch.tensor([[0, 1, 2, 4, 5], [1, 2, 3, 5, 6]])
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    with torch.no_grad():
        features = model.forward_features(x, edge_index, batch)
    assert features.shape == (2, 5 + 3 * 8) == (2, model.readout_dim)
    torch.testing.assert_close(features[:, :5], sum_pool(x, batch))
    assert model.head[1].in_features == model.readout_dim


@pytest.mark.parametrize("learn_eps", [True, False])
def test_eps_is_learnable_only_when_asked(learn_eps: bool) -> None:
    model = GINXu(4, dim=8, depth=2, learn_eps=learn_eps)
    names = {name for name, _ in model.named_parameters()}
    assert ("eps" in names) is learn_eps
    assert "eps" not in model.state_dict() or learn_eps
    torch.testing.assert_close(model.eps, torch.zeros(2))


def random_graphs(gen: torch.Generator, sizes: list[int]) -> tuple[torch.Tensor, ...]:
    """Random DAGs (edges lower -> higher index), features 6, edge features 3: x, ei, ea, batch."""
    xs, eis, offset = [], [], 0
    for n in sizes:
        a = torch.randint(0, n, (2 * n,), generator=gen)
        b = torch.randint(0, n, (2 * n,), generator=gen)
        keep = a != b
        pairs = torch.unique(torch.stack([a.minimum(b), a.maximum(b)])[:, keep], dim=1)
        eis.append(pairs + offset)
        xs.append(torch.randn(n, 6, generator=gen))
        offset += n
    ei = torch.cat(eis, 1)
    ea = torch.randn(ei.shape[1], 3, generator=gen)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.cat(xs), ei, ea, batch


def trained_statistics_gin(num_edge_features: int, seed: int) -> GINXu:
    """A model whose BatchNorms hold non-trivial running statistics, in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = GINXu(6, num_classes=2, dim=16, depth=3, num_edge_features=num_edge_features)
    with torch.no_grad():
        for _ in range(3):
            x, ei, ea, batch = random_graphs(gen, [6, 9, 4])
            model(x, ei, batch, 3, ea)
    return model.eval()


@pytest.mark.parametrize("num_edge_features", [0, 3])
def test_permutation_invariance(num_edge_features: int) -> None:
    gen = torch.Generator().manual_seed(10)
    model = trained_statistics_gin(num_edge_features, 11)
    x, ei, ea, batch = random_graphs(gen, [9])
    perm = torch.randperm(9, generator=gen)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(9)
    edge_perm = torch.randperm(ei.shape[1], generator=gen)
    with torch.no_grad():
        ref = model(x, ei, batch, 1, ea)
        # nodes renumbered, edges listed in another order and some flipped (GIN is undirected)
        moved = inv[ei][:, edge_perm]
        moved[:, ::2] = moved[:, ::2].flip(0)
        out = model(x[perm], moved, batch, 1, ea[edge_perm])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_edge_features", [0, 3])
def test_batch_independence_in_eval_mode(num_edge_features: int) -> None:
    gen = torch.Generator().manual_seed(12)
    model = trained_statistics_gin(num_edge_features, 13)
    sizes = [5, 8, 3]
    x, ei, ea, batch = random_graphs(gen, sizes)
    with torch.no_grad():
        together = model(x, ei, batch, len(sizes), ea)
        for g in range(len(sizes)):
            nodes = (batch == g).nonzero().squeeze(1)
            emask = batch[ei[0]] == g
            alone = model(
                x[nodes],
                ei[:, emask] - nodes[0],
                torch.zeros(len(nodes), dtype=torch.long),
                1,
                ea[emask],
            )
            torch.testing.assert_close(alone[0], together[g], rtol=1e-5, atol=1e-5)


def test_plain_gin_ignores_edge_features() -> None:
    gen = torch.Generator().manual_seed(14)
    model = trained_statistics_gin(0, 15)
    x, ei, ea, batch = random_graphs(gen, [7])
    with torch.no_grad():
        torch.testing.assert_close(model(x, ei, batch, 1, ea), model(x, ei, batch, 1, -ea))


def test_every_parameter_learns_in_training_mode() -> None:
    gen = torch.Generator().manual_seed(16)
    torch.manual_seed(16)
    model = GINXu(6, dim=8, depth=2, num_edge_features=3, learn_eps=True).train()
    x, ei, ea, batch = random_graphs(gen, [5, 7])
    out = model(x, ei, batch, 2, ea)
    (out * torch.randn(out.shape, generator=gen)).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not dead


def test_registered_with_a_rebuildable_config() -> None:
    model = create_model("gin_xu", num_node_features=6, dim=8, depth=2, learn_eps=True)
    assert isinstance(model, GINXu)
    rebuilt = create_model("gin_xu", **model.config)
    assert rebuilt.config == model.config
    assert model.config["learn_eps"] is True and model.config["num_classes"] == 3
