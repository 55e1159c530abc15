"""JSON request bodies decoded away from the event loop, with the settings' limits checked
first (FastAPI's "custom Request and APIRoute class" pattern).

FastAPI parses a JSON body with ``json.loads`` and validates it with pydantic on the event
loop, both holding the GIL for as long as they run: a 16 MB predict body would stall every
other request, health checks included, for a second or more, and a body nested 10,000 levels
deep reaches the recursive parser. Routes of :class:`DecodedBodyRoute` whose body is a
pydantic model hand the body bytes to :func:`app.api.body_decoding.decode_model` instead (in a
decoder process when large, :func:`app.serving.decoder_pool.decode_body`), with the molecule limits
as validation context so list lengths are checked before their items, and FastAPI receives
the validated model (which it does not validate again). Errors keep FastAPI's status (422)
and ``{"error": ...}`` shape; too deep a body is a 400.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api.body_decoding import BodyError, decode_model
from app.api.molecules import molecule_limits
from app.serving.decoder_pool import decode_body


class _DecodedBodyRequest(Request):
    """A request whose ``json()`` is the body validated as ``model``."""

    def __init__(self, request: Request, model: type[BaseModel]) -> None:
        super().__init__(request.scope, request.receive)
        self._model = model

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            context = molecule_limits(self.app.state.settings).context()
            body = await self.body()
            try:
                self._json = await decode_body(decode_model, body, self._model, context)
            except BodyError as exc:
                raise HTTPException(exc.status_code, exc.message) from None
        return self._json


class DecodedBodyRoute(APIRoute):
    """An API route whose pydantic body is decoded by :func:`app.api.body_decoding.decode_model`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        model = None if self.body_field is None else self.body_field.field_info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return handler
        body_model: type[BaseModel] = model

        async def decoded_body_handler(request: Request) -> Response:
            return await handler(_DecodedBodyRequest(request, body_model))

        return decoded_body_handler
