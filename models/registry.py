"""Model registry: a name → a constructor with preset arguments (``create_model(name, **kw)``).

Registered here: the vision presets of the paper (patch 16, depth 12; T dim 192 / 3 heads,
S 384 / 6, B 768 / 12) for ``PLSTMVision`` (``plstm_vis_*``) and ``ViT`` (``vit_*``), and the
graph models ``plstm_graph`` (``PLSTMGraph``) and ``gin`` (``GIN``) from ``models.graph`` and
``gin_xu`` (``GINXu``, the GIN of Xu et al. 2019) from ``models.gin_xu``, and the CNN
baseline ``resnet_small`` (``ResNetClassifier``, not servable) from ``models.cnn``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from models.capabilities import ModelCapabilities, capabilities_of
from models.cnn import ResNetClassifier
from models.gin_xu import GINXu
from models.graph import GIN, PLSTMGraph
from models.vision import PLSTMVision, ViT

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: ``builder(**{**defaults, **overrides})`` creates it."""

    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def model_class(self) -> type[nn.Module] | None:
        """The class the builder creates when the builder is a class, else None."""
        return self.builder if isinstance(self.builder, type) else None

    @property
    def capabilities(self) -> ModelCapabilities | None:
        """What the model class declares it can do (None: not servable, or not a class)."""
        return capabilities_of(self.model_class) if self.model_class is not None else None


def _check_arguments(entry: ModelEntry, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(entry.builder).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown} for model {entry.name!r}; accepted: {sorted(accepted)}"
        )
    missing = sorted(
        p.name
        for p in params
        if p.name in accepted and p.default is p.empty and p.name not in kwargs
    )
    if missing:
        raise ValueError(f"model {entry.name!r} needs argument(s) {missing}")


class ModelRegistry:
    """A set of named model constructors. The module functions use one shared instance."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}

    def register(self, name: str, **defaults: Any) -> Callable[[Builder], Builder]:
        """Decorator: register a class or builder function under ``name`` with preset keyword
        arguments; returns the builder unchanged (so one class can take several names)."""

        def decorator(builder: Builder) -> Builder:
            if not isinstance(name, str) or not name:
                raise ValueError(f"model name must be a non-empty string, got {name!r}")
            if name in self._entries:
                raise ValueError(f"model {name!r} is already registered")
            entry = ModelEntry(name, builder, dict(defaults))
            params = inspect.signature(builder).parameters.values()
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                unknown = sorted(set(defaults) - {p.name for p in params})
                if unknown:
                    raise ValueError(f"unknown default argument(s) {unknown} for {name!r}")
            self._entries[name] = entry
            return builder

        return decorator

    def entry(self, name: str) -> ModelEntry:
        """The entry of ``name``; ValueError listing the known names if there is none."""
        if name not in self._entries:
            raise ValueError(f"unknown model {name!r}; known models: {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def check_arguments(self, name: str, **kwargs: Any) -> None:
        """Raise ValueError if ``create(name, **kwargs)`` would get an unknown keyword or miss
        a required one (without building anything)."""
        entry = self.entry(name)
        _check_arguments(entry, {**entry.defaults, **kwargs})

    def create(self, name: str, **overrides: Any) -> nn.Module:
        entry = self.entry(name)
        kwargs = {**entry.defaults, **overrides}
        _check_arguments(entry, kwargs)
        return entry.builder(**kwargs)


_REGISTRY = ModelRegistry()


def register_model(name: str, **defaults: Any) -> Callable[[Builder], Builder]:
    """Decorator registering a model class or builder function as ``name`` (with preset
    keyword arguments ``defaults``) in the shared registry."""
    return _REGISTRY.register(name, **defaults)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; ``overrides`` replace its preset arguments.

    Unknown name → ValueError listing the known names; an unknown keyword → ValueError
    naming it; a missing required keyword (e.g. ``num_node_features``) → ValueError.
    """
    return _REGISTRY.create(name, **overrides)


def list_models() -> list[str]:
    """All registered names, sorted."""
    return _REGISTRY.names()


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (builder, presets, class)."""
    return _REGISTRY.entry(name)


def check_model_arguments(name: str, **kwargs: Any) -> None:
    """ValueError if ``create_model(name, **kwargs)`` would reject the keywords."""
    _REGISTRY.check_arguments(name, **kwargs)


VISION_SIZES = {"t": (192, 3), "s": (384, 6), "b": (768, 12)}
"""Paper sizes (Table 1 / Table 6): width and heads; all with depth 12 and patch 16."""

for _size, (_dim, _heads) in VISION_SIZES.items():
    for _prefix, _cls in (("plstm_vis", PLSTMVision), ("vit", ViT)):
        register_model(f"{_prefix}_{_size}", dim=_dim, num_heads=_heads, depth=12, patch_size=16)(
            _cls
        )

register_model("plstm_graph")(PLSTMGraph)
register_model("gin")(GIN)
register_model("gin_xu")(GINXu)
register_model("resnet_small")(ResNetClassifier)
