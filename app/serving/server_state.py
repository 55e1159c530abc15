"""The server's life as the routes read it (``app.state.server``): the runtime of every READY
model version, whether start-up has finished and whether the server drains. Written by the
lifespans only (:mod:`app.main`, :mod:`app.engine.client`)."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.serving.runtime import Runtime

STARTING = "the server is starting: models are still loading"
SHUTTING_DOWN = "the server is shutting down"


@dataclass
class ServerState:
    """``runtimes`` by (name, version): a dict inline, the engine's ``RemoteRuntimes`` in a
    worker; ``ready`` once start-up has built them; ``draining`` from shutdown on."""

    runtimes: MutableMapping[tuple[str, int], Runtime] = field(default_factory=dict)
    ready: bool = False
    draining: bool = False

    def refusal(self) -> str | None:
        """Why no inference request is taken now (503 with Retry-After); None when they are."""
        if self.draining:
            return SHUTTING_DOWN
        if not self.ready:
            return STARTING
        return None

    @property
    def serving(self) -> bool:
        """Taking requests, for at least one model version."""
        return self.refusal() is None and bool(self.runtimes)

    def serves(self, name: str, version: int) -> bool:
        """Taking requests for this model version."""
        return self.refusal() is None and (name, version) in self.runtimes

    def stop(self) -> None:
        """Shutdown has begun: no new requests from now on."""
        self.ready = False
        self.draining = True
