"""What the model classes declare they can do (``models.capabilities``), as the registry, the
exporter and the server read it."""

from __future__ import annotations

import pytest
import torch

from models import create_model
from models.capabilities import ModelCapabilities, capabilities_of, use_method
from models.registry import model_entry

SMALL = {
    "plstm_vis_t": {"img_size": 16, "patch_size": 8, "dim": 16, "depth": 2, "num_heads": 2},
    "vit_t": {"img_size": 16, "patch_size": 8, "dim": 16, "depth": 2, "num_heads": 2},
    "plstm_graph": {"num_node_features": 5, "num_classes": 3, "dim": 16, "depth": 2},
    "gin": {"num_node_features": 5, "num_classes": 3, "dim": 16, "depth": 2},
}
DECLARED = {
    "plstm_vis_t": ("image", ("parallel", "recurrent", "chunkwise"), "plstm_vision", True),
    "vit_t": ("image", ("parallel",), "vit", True),
    "plstm_graph": ("graph", ("parallel", "recurrent"), "plstm_graph", True),
    "gin": ("graph", ("parallel",), "gin", False),
}


@pytest.mark.parametrize("name", list(DECLARED))
def test_registered_classes_declare_what_they_can_do(name: str) -> None:
    kind, methods, family, onnx = DECLARED[name]
    expected = ModelCapabilities(kind, methods, family, onnx)
    assert model_entry(name).capabilities == expected
    assert capabilities_of(create_model(name, **SMALL[name])) == expected


def test_a_class_without_a_declaration_cannot_be_served() -> None:
    assert model_entry("gin_xu").capabilities is None
    assert capabilities_of(create_model("gin_xu", num_node_features=5, num_classes=3)) is None


@pytest.mark.parametrize("name", ["plstm_vis_t", "plstm_graph"])
def test_use_method_switches_every_declared_method(name: str) -> None:
    model = create_model(name, **SMALL[name])
    for method in reversed(model.capabilities.methods):
        use_method(model, method)
        layers = [m for m in model.modules() if hasattr(m, "method") and m is not model]
        assert layers and {layer.method for layer in layers} == {method}


def test_use_method_is_a_no_op_for_a_single_method() -> None:
    model = create_model("vit_t", **SMALL["vit_t"])
    x = torch.rand(1, 3, 16, 16)
    before = model(x)
    use_method(model, "parallel")
    assert torch.equal(model(x), before)


@pytest.mark.parametrize(
    "name, method", [("plstm_vis_t", "onnx"), ("vit_t", "recurrent"), ("gin_xu", "parallel")]
)
def test_use_method_refuses_a_method_the_model_does_not_declare(name: str, method: str) -> None:
    kwargs = SMALL.get(name, {"num_node_features": 5, "num_classes": 3})
    with pytest.raises(ValueError, match=f"no inference method '{method}'"):
        use_method(create_model(name, **kwargs), method)


@pytest.mark.parametrize(
    "kind, methods, match", [("audio", ("parallel",), "kind must be"), ("image", (), "at least")]
)
def test_declarations_are_checked(kind: str, methods: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelCapabilities(kind, methods, "vit", onnx=False)
