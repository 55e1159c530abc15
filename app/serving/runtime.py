"""What the request handlers need of a served model version, wherever it runs: the
:class:`Runtime` protocol. :class:`app.serving.inference.ModelRuntime` implements it in this
process (its batcher and batch functions), ``app.engine.client.RemoteRuntime`` by forwarding to
the engine process."""

from __future__ import annotations

from typing import Protocol

import torch

from app.serving.admission import Deadline
from app.serving.cost_formulas import GraphBatch
from app.serving.images import ImageSpec
from app.serving.inference import Outcome
from app.serving.repository import ModelEntry
from models.molecule_features import MolGraph


class Runtime(Protocol):
    """A READY model version: its entry, its :class:`ImageSpec` (image models; None for graph
    models), shedding before decoding, and one model call per image or per graph request."""

    entry: ModelEntry
    spec: ImageSpec | None

    def admit(self, deadline: Deadline) -> None:
        """Refuse the request at once (an ApiError) when it cannot be taken now."""

    async def classify(
        self, image: torch.Tensor, path: str, deadline: Deadline | None = None
    ) -> Outcome:
        """image ``[C,H,W]`` model input on the explicit ``path`` → logits ``[C]``."""
        ...

    async def predict(
        self,
        graphs: list[MolGraph],
        path: str,
        deadline: Deadline | None = None,
        *,
        size: GraphBatch | None = None,
    ) -> Outcome:
        """G graphs on the explicit ``path`` → outputs ``[G,C]``."""
        ...
