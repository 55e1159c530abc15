"""PLSTMGraph and GIN: shapes, gradients, methods, DAG direction, batching, config."""

from __future__ import annotations

import json

import pytest
import torch

from models.graph import GIN, PLSTMGraph, mean_pool
from models.molecule_features import (
    NUM_EDGE_FEATURES,
    NUM_NODE_FEATURES,
    batch_graphs,
    featurize_smiles,
)

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "[Na+]", "C[N+](C)(C)CC(=O)[O-]"]


def molecule_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch_graphs([featurize_smiles(s) for s in SMILES])


def random_graph_batch(gen: torch.Generator, sizes: list[int]) -> tuple[torch.Tensor, ...]:
    """Random DAGs (edges lower -> higher index) with random features: x, ei, ea, batch."""
    xs, eis, offset = [], [], 0
    for n in sizes:
        a = torch.randint(0, n, (2 * n,), generator=gen)
        b = torch.randint(0, n, (2 * n,), generator=gen)
        keep = a != b
        pairs = torch.unique(
            torch.stack([torch.minimum(a, b), torch.maximum(a, b)])[:, keep], dim=1
        )
        eis.append(pairs + offset)
        xs.append(torch.randn(n, 6, generator=gen))
        offset += n
    ei = torch.cat(eis, 1)
    ea = torch.randn(ei.shape[1], 3, generator=gen)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.cat(xs), ei, ea, batch


def redraw(model: torch.nn.Module, gen: torch.Generator, std: float = 0.5) -> None:
    """Random pLSTM gate weights (they start at zero, which would hide bugs)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate.weight" in name:
                p.normal_(0.0, std, generator=gen)


def tiny_plstm(**kw: object) -> PLSTMGraph:
    args = {"dim": 16, "depth": 4, "num_heads": 2} | kw
    return PLSTMGraph(NUM_NODE_FEATURES, num_edge_features=NUM_EDGE_FEATURES, **args)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_plstm_graph_shapes_and_grads(task: str) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = tiny_plstm(task=task)
    redraw(model, gen)
    x, ei, ea, batch = molecule_batch()
    out = model(x, ei, batch, edge_attr=ea)
    assert out.shape == (len(SMILES), 3 if task == "classification" else 1)
    assert torch.isfinite(out).all()
    target = torch.randn(out.shape, generator=gen)
    ((out - target) ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gin_shapes_and_grads() -> None:
    torch.manual_seed(1)
    model = GIN(NUM_NODE_FEATURES, dim=16, depth=3, num_edge_features=NUM_EDGE_FEATURES)
    x, ei, ea, batch = molecule_batch()
    out = model(x, ei, batch, edge_attr=ea)
    assert out.shape == (len(SMILES), 3) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    reg = GIN(NUM_NODE_FEATURES, task="regression", dim=8, depth=1)
    assert reg(x, ei, batch).shape == (len(SMILES), 1)
    assert reg.num_classes == 1


def test_methods_agree() -> None:
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = tiny_plstm(method="parallel").double()
    redraw(model, gen, std=1.0)
    x, ei, ea, batch = molecule_batch()
    x, ea = x.double(), ea.double()
    out_p = model(x, ei, batch, edge_attr=ea)
    feat_p = model.forward_features(x, ei, batch, edge_attr=ea)
    model.set_method("recurrent")
    assert model.config["method"] == "recurrent"
    assert {b.mixer.method for b in model.blocks} == {"recurrent"}
    out_r = model(x, ei, batch, edge_attr=ea)
    feat_r = model.forward_features(x, ei, batch, edge_attr=ea)
    torch.testing.assert_close(out_p, out_r, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(feat_p, feat_r, rtol=1e-9, atol=1e-10)
    assert feat_p.std() > 1e-3  # not a degenerate constant
    with pytest.raises(ValueError, match="method must be one of"):
        model.set_method("chunkwise")


def test_modes_and_directions_alternate() -> None:
    model = tiny_plstm(depth=4)
    assert [b.mixer.mode for b in model.blocks] == ["D", "P", "D", "P"]
    seen: list[torch.Tensor] = []
    hooks = [
        b.mixer.register_forward_pre_hook(lambda _m, args: seen.append(args[1].clone()))
        for b in model.blocks
    ]
    x, ei, ea, batch = molecule_batch()
    model(x, ei, batch, edge_attr=ea)
    for h in hooks:
        h.remove()
    assert len(seen) == 4
    assert torch.equal(seen[0], ei) and torch.equal(seen[2], ei)
    assert torch.equal(seen[1], ei.flip(0)) and torch.equal(seen[3], ei.flip(0))


def test_direction_matters() -> None:
    # a 1-block model reads the DAG forward only: reversing the edges changes the output
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = PLSTMGraph(6, dim=16, depth=1, num_heads=2)
    redraw(model, gen, std=1.0)
    with torch.no_grad():
        for block in model.blocks:
            block.mixer.source_gate.bias.fill_(2.0)
            block.mixer.mark_gate.bias.fill_(2.0)
    x, ei, _, batch = random_graph_batch(gen, [7, 9])
    with torch.no_grad():
        fwd = model(x, ei, batch)
        rev = model(x, ei.flip(0), batch)
    assert (fwd - rev).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["plstm", "gin"])
def test_batch_independence(kind: str) -> None:
    """A graph's prediction does not depend on the other graphs of its batch."""
    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    if kind == "plstm":
        model = PLSTMGraph(6, num_classes=2, dim=16, depth=2, num_heads=2, num_edge_features=3)
        redraw(model, gen)
    else:
        model = GIN(6, num_classes=2, dim=16, depth=2, num_edge_features=3)
    model.eval()
    sizes = [5, 8, 3]
    x, ei, ea, batch = random_graph_batch(gen, sizes)
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
            torch.testing.assert_close(alone[0], together[g], rtol=1e-5, atol=1e-6)


def test_gin_is_permutation_invariant() -> None:
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    model = GIN(6, dim=16, depth=3, num_edge_features=3).eval()
    x, ei, ea, batch = random_graph_batch(gen, [9])
    perm = torch.randperm(9, generator=gen)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(9)
    with torch.no_grad():
        ref = model(x, ei, batch, 1, ea)
        out = model(x[perm], inv[ei], batch, 1, ea)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [PLSTMGraph, GIN])
def test_edge_features_are_used(cls: type) -> None:
    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    model = cls(6, dim=16, depth=2, num_edge_features=3).eval()
    redraw(model, gen)
    x, ei, ea, batch = random_graph_batch(gen, [6, 6])
    with torch.no_grad():
        a = model(x, ei, batch, edge_attr=ea)
        b = model(x, ei, batch, edge_attr=torch.randn(ea.shape, generator=gen))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="edge_attr is required"):
        model(x, ei, batch)
    with pytest.raises(ValueError, match=r"edge_attr must have shape \[E,Fe\]"):
        model(x, ei, batch, edge_attr=ea[:, :2])


@pytest.mark.parametrize("cls", [PLSTMGraph, GIN])
def test_forward_api_and_config_round_trip(cls: type) -> None:
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    model = cls(6, num_classes=4, dim=16, depth=2, num_edge_features=3, dropout=0.1).eval()
    redraw(model, gen)
    x, ei, ea, batch = random_graph_batch(gen, [4, 6, 5])
    with torch.no_grad():
        out = model(x, ei, batch, 3, ea)
        feats = model.forward_features(x, ei, batch, 3, ea)
        assert feats.shape == (3, 16)
        torch.testing.assert_close(model.forward_head(feats), out)
    config = json.loads(json.dumps(model.config))
    assert config["num_classes"] == 4 and config["num_edge_features"] == 3
    rebuilt = cls(**config).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, ei, batch, 3, ea), out)


def test_num_graphs_and_empty_graph_pooling() -> None:
    h = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    batch = torch.tensor([0, 0, 2])
    pooled = mean_pool(h, batch, num_graphs=4)
    torch.testing.assert_close(
        pooled, torch.tensor([[2.0, 3.0], [0.0, 0.0], [5.0, 7.0], [0.0, 0.0]])
    )
    torch.testing.assert_close(mean_pool(h, batch), pooled[:3])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        PLSTMGraph(6, task="ranking")
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        GIN(6, num_classes=0)
    with pytest.raises(ValueError, match="method must be one of"):
        PLSTMGraph(6, method="fused")
    assert PLSTMGraph(6, task="regression", dim=8, depth=1, num_heads=2).num_classes == 1
    model = PLSTMGraph(6, dim=8, depth=1, num_heads=2)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(8))
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"x must have shape \[N,F\] with F = 6"):
        model(x[:, :5], ei, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"batch must be a long tensor of shape \[N\]"):
        model(x, ei, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="edge_index must be a long tensor"):
        model(x, ei.float(), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="cycle"):
        model(x, torch.tensor([[0, 1, 2], [1, 2, 0]]), torch.zeros(3, dtype=torch.long))
