"""Request handlers per model kind (:mod:`.base` says what a handler does): the routes parse
a request, pick the handler of the model's declared kind, and respond with what it encodes."""

from __future__ import annotations

from app.api.handlers.base import Decoded, ModelHandler, Predicted
from app.api.handlers.graphs import GraphHandler
from app.api.handlers.images import ImageHandler
from app.serving.repository import ModelEntry

IMAGES = ImageHandler()
GRAPHS = GraphHandler()
HANDLERS: dict[str, ModelHandler] = {IMAGES.kind: IMAGES, GRAPHS.kind: GRAPHS}

__all__ = ["GRAPHS", "HANDLERS", "IMAGES", "Decoded", "ModelHandler", "Predicted", "handler_for"]


def handler_for(entry: ModelEntry) -> ModelHandler:
    """The handler of ``entry``'s kind (the model's declared kind: one of :data:`HANDLERS`)."""
    return HANDLERS[entry.kind]
