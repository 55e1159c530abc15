"""Every registered model (tiny overrides): output shape, finite values, a gradient for every
parameter, a second input resolution (vision), forward == forward_head(forward_features), a
rebuild from ``config``; the paper presets and the registry's errors.

Gradients: the pLSTM layers zero-initialise their gate weights (paper Table 4); we re-draw every
``*_gate.weight`` from N(0, 0.3²) before the backward pass so that every parameter is tested in
a generic state rather than at that special point.
"""

from __future__ import annotations

import importlib.util
import inspect
import json

import pytest
import torch
from torch import nn

from models import PLSTMVision, ViT, create_model, list_models
from models.backbone import IsotropicVisionModel
from models.cnn import ResNetClassifier
from models.registry import ModelRegistry, model_entry

TINY_VISION = {"dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "patch_size": 8}
VISION_CLASSES = 5
TINY_CNN = {"widths": [8, 16], "blocks": 1}
TINY_GRAPH = {"num_node_features": 7, "num_classes": 3, "dim": 16, "depth": 2, "num_heads": 2}
GRAPH_CLASSES = 3
BATCH = 2


def is_vision(name: str) -> bool:
    cls = model_entry(name).model_class
    return cls is not None and issubclass(cls, IsotropicVisionModel)


def is_cnn(name: str) -> bool:
    return model_entry(name).model_class is ResNetClassifier


def takes_images(name: str) -> bool:
    return is_vision(name) or is_cnn(name)


def tiny_overrides(name: str) -> dict:
    """Tiny constructor overrides for a registered model (vision, CNN or graph family)."""
    if is_vision(name):
        return {**TINY_VISION, "num_classes": VISION_CLASSES}
    if is_cnn(name):
        return {**TINY_CNN, "num_classes": VISION_CLASSES}
    params = inspect.signature(model_entry(name).builder).parameters
    if "num_node_features" in params:
        return {k: v for k, v in TINY_GRAPH.items() if k in params}
    raise AssertionError(f"no tiny test configuration for registered model {name!r}")


def randomize_gates(model: nn.Module, seed: int) -> None:
    """Re-draw the zero-initialised gate weights of every pLSTM layer as N(0, 0.3²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("_gate.weight"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def tiny_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, **tiny_overrides(name))
    randomize_gates(model, seed + 1)
    return model.eval()


def tiny_graph_batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two DAGs as one disjoint union: a diamond between an entry and an exit edge (nodes
    0-5) and a triangle (nodes 6-8). x ``[9,7]`` (random), edge_index ``[2,9]``, batch ``[9]``.

    Edge 0→1 continues into two edges (1→2, 1→3) and, on the reversed DAG, edge 5→4 into
    4→2 and 4→3: the P-mode split between outgoing edges (a softmax) is not trivial in
    either direction.
    """
    edges = [(0, 1), (1, 2), (1, 3), (2, 4), (3, 4), (4, 5), (6, 7), (7, 8), (6, 8)]
    edge_index = torch.tensor(edges, dtype=torch.long).t().contiguous()
    batch = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1])
    x = torch.randn(9, TINY_GRAPH["num_node_features"], generator=g)
    return x, edge_index, batch


def tiny_inputs(name: str, seed: int = 0, size: tuple[int, int] = (32, 32)) -> tuple:
    g = torch.Generator().manual_seed(seed)
    if takes_images(name):
        return (torch.randn(BATCH, 3, *size, generator=g),)
    return tiny_graph_batch(g)


def expected_shape(name: str) -> tuple[int, int]:
    return (BATCH, VISION_CLASSES if takes_images(name) else GRAPH_CLASSES)


MODELS = list_models()
VISION_MODELS = [n for n in MODELS if is_vision(n)]


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_finite(name: str) -> None:
    model = tiny_model(name)
    out = model(*tiny_inputs(name))
    assert out.shape == expected_shape(name)
    assert torch.isfinite(out).all()
    assert out.std() > 0  # not a constant output


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = tiny_model(name).train()
    out = model(*tiny_inputs(name, seed=3))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    (out * weights).sum().backward()
    dead = [
        pname
        for pname, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0
    ]
    assert not dead, f"parameters without a finite non-zero gradient: {dead}"


@pytest.mark.parametrize("name", MODELS)
def test_forward_is_head_of_features(name: str) -> None:
    model = tiny_model(name)
    inputs = tiny_inputs(name, seed=5)
    with torch.no_grad():
        features = model.forward_features(*inputs)
        assert features.dim() == 2 and features.shape[0] == BATCH
        torch.testing.assert_close(model(*inputs), model.forward_head(features), rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_rebuild_from_config(name: str) -> None:
    model = tiny_model(name)
    config = json.loads(json.dumps(model.config))  # survives a JSON round trip
    rebuilt = create_model(name, **config).eval()
    assert type(rebuilt) is type(model)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    inputs = tiny_inputs(name, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*inputs), model(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("name", VISION_MODELS)
@pytest.mark.parametrize("size", [(48, 48), (32, 48), (8, 16)])
def test_vision_models_run_at_other_resolutions(name: str, size: tuple[int, int]) -> None:
    model = tiny_model(name)
    with torch.no_grad():
        out = model(*tiny_inputs(name, seed=7, size=size))
    assert out.shape == expected_shape(name)
    assert torch.isfinite(out).all()


def test_vision_config_holds_every_constructor_argument() -> None:
    for cls in (PLSTMVision, ViT):
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert set(cls(**TINY_VISION).config) == params


# Paper Table 1 (rounded to millions): DeiT-T/S/B 6M/22M/86M, pLSTM-Vis-T/S/B 6M/23M/89M.
PRESETS = [
    ("plstm_vis_t", PLSTMVision, 192, 3, 6e6),
    ("plstm_vis_s", PLSTMVision, 384, 6, 23e6),
    ("plstm_vis_b", PLSTMVision, 768, 12, 89e6),
    ("vit_t", ViT, 192, 3, 6e6),
    ("vit_s", ViT, 384, 6, 22e6),
    ("vit_b", ViT, 768, 12, 86e6),
]


@pytest.mark.parametrize(("name", "cls", "dim", "heads", "paper_params"), PRESETS)
def test_presets_match_the_paper(
    name: str, cls: type, dim: int, heads: int, paper_params: float
) -> None:
    with torch.device("meta"):  # no memory for the weights
        model = create_model(name)
    assert type(model) is cls
    config = model.config
    assert (config["dim"], config["num_heads"]) == (dim, heads)
    assert (config["depth"], config["patch_size"]) == (12, 16)
    assert len(model.blocks) == 12
    # The corner pooling's 4D-wide head makes pLSTM-Vis ~2 % larger than Table 1 at size B.
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - paper_params) <= 0.5e6 + 0.03 * paper_params, count


def test_overrides_replace_presets() -> None:
    model = create_model("plstm_vis_s", **TINY_VISION, num_classes=4, mode_pattern="D")
    assert model.config["dim"] == 32 and model.config["num_classes"] == 4
    assert [layer.mode for layer in model.plstm_layers()] == ["D", "D"]


def test_unknown_model_name_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'plstm_vis_xl'") as info:
        create_model("plstm_vis_xl")
    for name in list_models():
        assert repr(name) in str(info.value)


def test_unknown_override_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['widht'\].*'vit_t'"):
        create_model("vit_t", widht=64)


def test_list_models_is_sorted_and_has_the_presets() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {p[0] for p in PRESETS} <= set(names)


def test_graph_models_are_registered() -> None:
    if importlib.util.find_spec("models.graph") is None:
        pytest.skip("models/graph.py does not exist yet")
    assert {"plstm_graph", "gin"} <= set(list_models())
    with pytest.raises(ValueError, match="num_node_features"):
        create_model("gin")  # required, no preset


def test_registry_semantics() -> None:
    registry = ModelRegistry()

    def build(width: int, depth: int = 1) -> nn.Module:
        return nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))

    assert registry.register("mlp", width=4)(build) is build
    registry.register("mlp_wide", width=16, depth=2)(build)
    assert registry.names() == ["mlp", "mlp_wide"]
    assert registry.entry("mlp").model_class is None
    assert len(registry.create("mlp_wide")) == 2
    assert registry.create("mlp", width=3)[0].in_features == 3
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mlp")(build)
    with pytest.raises(ValueError, match=r"unknown default argument\(s\) \['height'\]"):
        registry.register("bad", height=2)(build)
    with pytest.raises(ValueError, match=r"'plain' needs argument\(s\) \['width'\]"):
        registry.register("plain")(build)
        registry.create("plain")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['heads'\]"):
        registry.check_arguments("mlp", heads=2)

    registry.register("anything")(lambda **kw: nn.Linear(kw["n"], 1))
    assert registry.create("anything", n=5).in_features == 5  # **kwargs: no keyword check
