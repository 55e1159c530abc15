"""What a servable model can do, declared once by its class (``capabilities`` class attribute)
and read by the registry, the ONNX exporter, the server and its cost model, instead of each of
them testing the model's class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

KINDS = ("image", "graph")


@dataclass(frozen=True)
class ModelCapabilities:
    """``kind``: the input, "image" (``[B,C,H,W]`` → ``[B,C']``) or "graph" (a batch of
    molecule graphs → ``[G,C']``); ``methods``: the inference methods the model computes the
    same function with, switched by ``set_method`` when there are several (the server's explicit
    paths); ``family``: the cost formulas of ``app.serving.cost_formulas``; ``onnx``: whether
    ``models.onnx.export`` can export it."""

    kind: str
    methods: tuple[str, ...]
    family: str
    onnx: bool

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not self.methods:
            raise ValueError("a model needs at least one inference method")


def capabilities_of(model: nn.Module | type[Any] | None) -> ModelCapabilities | None:
    """The capabilities a model (instance or class) declares; None when it declares none (it
    can be trained and saved, but not served)."""
    cls = model if isinstance(model, type) else type(model)
    found = getattr(cls, "capabilities", None)
    return found if isinstance(found, ModelCapabilities) else None


def use_method(model: nn.Module, method: str) -> None:
    """Switch ``model`` to inference ``method`` when it declares several (a no-op for models
    with a single one); ValueError for a method it does not declare."""
    capabilities = capabilities_of(model)
    if capabilities is None or method not in capabilities.methods:
        methods = [] if capabilities is None else list(capabilities.methods)
        raise ValueError(f"{type(model).__name__} has no inference method {method!r}: {methods}")
    if len(capabilities.methods) > 1:
        model.set_method(method)  # type: ignore[operator]
