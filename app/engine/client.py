"""A worker's side of the engine process (``PLSTM_ENGINE=process``): the connection, the
runtimes the routes call, and the app lifespan that replaces loading the models.

:class:`EngineClient` holds one persistent Unix-socket connection to the engine, with one
reader task matching replies to requests by id; it (re)connects in the background. On each
``HELLO`` the worker rebuilds its entries (:mod:`app.engine.entries`), sets the model info
metrics and its :class:`RemoteRuntime` per served version, and reports ready. If the
connection is lost, pending and new inference requests are answered 503 ``inference engine
unavailable`` and readiness goes false (:class:`RemoteRuntimes`) until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI

from app.core.errors import ApiError, unavailable
from app.engine.entries import RemoteRepository, entry_from_meta
from app.engine.protocol import (
    CANCEL,
    CLASSIFY,
    ERROR,
    EXPLAIN,
    HELLO,
    METRICS,
    PREDICT,
    Message,
    encode,
    error_from_meta,
    graph_tensors,
    read_message,
)
from app.serving.batching import Deadline, RequestTimeout, ShuttingDown
from app.serving.cost_formulas import GraphBatch
from app.serving.explanations import Explained, ExplainRequest
from app.serving.images import ImageSpec
from app.serving.inference import Outcome
from app.serving.model_state import INPUT_SPEC_INVALID, LOAD_FAILED
from app.serving.repository import ModelEntry
from app.serving.server_state import ServerState
from models.molecule_features import MolGraph

logger = logging.getLogger(__name__)

ENGINE_UNAVAILABLE = "inference engine unavailable"
RESULT_GRACE_S = 5.0
"""Added to the seconds left to a request's deadline (which the engine's batcher enforces)
before a worker gives up on a reply itself."""
METRICS_TIMEOUT_S = 2.0
RECONNECT_S = (0.05, 1.0)
"""First and longest pause between connection attempts."""
STARTUP_POLL_S = 0.05


def engine_unavailable() -> ApiError:
    """503 ``inference engine unavailable`` with Retry-After."""
    return unavailable(ENGINE_UNAVAILABLE)


class EngineClient:
    """One connection to the engine at ``path``, multiplexed by request id; ``pid``: the
    engine's process id, when known (see :meth:`engine_alive`)."""

    def __init__(self, path: str, pid: int | None = None) -> None:
        self.path = path
        self.pid = pid
        self.connected = False
        self.engine_pid: int | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task | None = None

    def start(self, on_hello: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Connect in the background (retrying until it succeeds, and again whenever the
        connection is lost); ``on_hello(meta)`` runs on each ``HELLO`` before requests flow."""
        self._task = asyncio.create_task(self._run(on_hello))

    def engine_alive(self) -> bool:
        """False once the engine process is known to be gone (True when its pid is unknown)."""
        if self.pid is None:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def request(
        self,
        kind: int,
        meta: dict[str, Any],
        tensors: Sequence[torch.Tensor] = (),
        timeout: float | None = None,
    ) -> Message:
        """Send one request and return its reply; the engine's ``ERROR`` is raised as the
        exception it stands for. 503 (:func:`engine_unavailable`) without a connection or
        when it is lost meanwhile; :class:`RequestTimeout` after ``timeout`` seconds."""
        writer = self._writer
        if not self.connected or writer is None:
            raise engine_unavailable()
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._pending[rid] = future
        timer = None if timeout is None else loop.call_later(timeout, self._expire, rid, timeout)
        try:
            writer.write(encode(kind, rid, meta, tensors))
            await writer.drain()
            return await future
        except ConnectionError:
            raise engine_unavailable() from None
        except asyncio.CancelledError:
            if self._pending.get(rid) is future:
                self._send_cancel(rid)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(rid, None)

    async def metrics_text(self) -> bytes:
        """The engine's metric families (Prometheus text); empty without an engine."""
        if not self.connected:
            return b""
        try:
            reply = await self.request(METRICS, {}, timeout=METRICS_TIMEOUT_S)
        except (ApiError, RequestTimeout):
            return b""
        return str(reply.meta.get("text", "")).encode()

    def _expire(self, rid: int, timeout: float) -> None:
        future = self._pending.pop(rid, None)
        if future is not None and not future.done():
            future.set_exception(RequestTimeout(f"no result within {timeout:g} s"))
            self._send_cancel(rid)

    def _send_cancel(self, rid: int) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode(CANCEL, rid))

    async def _run(self, on_hello: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        delay = RECONNECT_S[0]
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECONNECT_S[1])
                continue
            try:
                hello = await read_message(reader)
                if hello.kind != HELLO:
                    raise ValueError(f"expected HELLO, got message kind {hello.kind}")
                await on_hello(hello.meta)
                self.engine_pid = hello.meta.get("pid")
                self._writer, self.connected = writer, True
                delay = RECONNECT_S[0]
                logger.info("connected to the inference engine (pid %s)", self.engine_pid)
                await self._read(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            except Exception:  # a malformed message, or metadata this worker cannot use
                logger.exception("dropping the inference engine connection")
            finally:
                was_connected = self.connected
                self._lost()
                writer.close()
            if was_connected:
                logger.error("lost the inference engine: inference answers 503 until it is back")
            await asyncio.sleep(delay)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            msg = await read_message(reader)
            future = self._pending.pop(msg.rid, None)
            if future is None or future.done():
                continue  # given up (timeout, cancelled)
            if msg.kind == ERROR:
                future.set_exception(error_from_meta(msg.meta))
            else:
                future.set_result(msg)

    def _lost(self) -> None:
        self.connected = False
        self._writer = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(engine_unavailable())


class RemoteRuntime:
    """A model version served by the engine, with the interface the routes use of
    :class:`app.serving.inference.ModelRuntime`: ``entry``, ``spec``, ``classify``, ``predict``;
    :meth:`drain` for the shutdown."""

    def __init__(
        self, entry: ModelEntry, spec: ImageSpec | None, client: EngineClient, timeout_s: float
    ) -> None:
        """``timeout_s``: the deadline of a request that brings none (``request_timeout_s``)."""
        self.entry = entry
        self.spec = spec
        self.client = client
        self.timeout_s = timeout_s
        self._inflight = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self, deadline: Deadline) -> None:
        """Refuse new requests while draining; whether the model can take the request by its
        deadline is the engine's decision, once it is forwarded."""
        if self._closing:
            raise ShuttingDown("the server is shutting down")

    async def classify(
        self, image: torch.Tensor, path: str, deadline: Deadline | None = None
    ) -> Outcome:
        """image ``[C,H,W]`` model input, explicit ``path`` → logits ``[C]``; the engine gets
        the seconds left to ``deadline`` (default: ``timeout_s`` from now)."""
        return await self._call(CLASSIFY, path, [image], deadline)

    async def predict(
        self,
        graphs: list[MolGraph],
        path: str,
        deadline: Deadline | None = None,
        *,
        size: GraphBatch | None = None,
    ) -> Outcome:
        """G graphs, explicit ``path`` → outputs ``[G,C]`` (the engine measures their ``size``
        itself)."""
        return await self._call(PREDICT, path, graph_tensors(graphs), deadline)

    async def explain(self, request: ExplainRequest) -> Explained:
        """The explanation of ``request``, computed by the engine process (``EXPLAIN``)."""
        entry = self.entry
        meta = {
            "m": entry.name,
            "v": entry.version,
            "p": request.path,
            "s": request.steps,
            "c": request.target,
        }
        item = request.input
        tensors = [item] if isinstance(item, torch.Tensor) else graph_tensors([item])
        start = time.perf_counter()
        timeout = self.timeout_s + RESULT_GRACE_S
        reply = await self.client.request(EXPLAIN, meta, tensors, timeout)
        contributions, outputs, baseline_outputs = reply.tensors
        inference_s = float(reply.meta["i"])
        return Explained(
            contributions=contributions,
            outputs=outputs,
            baseline_outputs=baseline_outputs,
            target=int(reply.meta["c"]),
            inference_s=inference_s,
            queue_s=max(0.0, time.perf_counter() - start - inference_s),
        )

    async def drain(self) -> None:
        """Refuse new requests (:class:`ShuttingDown`) and wait for those in progress."""
        self._closing = True
        await self._idle.wait()

    async def _call(
        self, kind: int, path: str, tensors: list[torch.Tensor], deadline: Deadline | None
    ) -> Outcome:
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        start = time.perf_counter()
        if deadline is None:
            deadline = Deadline(start + self.timeout_s, self.timeout_s)
        left = max(0.0, deadline.left(start))
        meta = {"m": self.entry.name, "v": self.entry.version, "p": path}
        meta |= {"d": left, "s": deadline.seconds}
        self._inflight += 1
        self._idle.clear()
        try:
            reply = await self.client.request(kind, meta, tensors, left + RESULT_GRACE_S)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        inference_s = float(reply.meta["i"])
        waited = time.perf_counter() - start
        return Outcome(reply.tensors[0], inference_s, max(0.0, waited - inference_s))


class RemoteRuntimes(dict[tuple[str, int], RemoteRuntime]):
    """A worker's runtimes by (name, version). The routes judge readiness by ``not runtimes``
    and ``key in runtimes``: both follow the engine connection, so readiness is false while
    it is lost; item access still finds a runtime, whose calls then answer 503."""

    def __init__(self, client: EngineClient) -> None:
        super().__init__()
        self.client = client

    def __bool__(self) -> bool:
        return self.client.connected and len(self) > 0

    def __contains__(self, key: object) -> bool:
        return self.client.connected and super().__contains__(key)


def _entries(metas: list[dict[str, Any]]) -> list[ModelEntry]:
    entries = []
    for meta in metas:
        try:
            entry = entry_from_meta(meta)
        except (TypeError, ValueError, RuntimeError) as exc:
            entry = entry_from_meta({**meta, "cost": None})
            entry.mark_unavailable(LOAD_FAILED, f"cannot describe the model: {exc}")
        entries.append(entry)
    return entries


async def _install(app: FastAPI, hello: dict[str, Any]) -> None:
    """Entries, model info and runtimes from the engine's ``HELLO``; then ready."""
    metas = hello["entries"]
    entries = await asyncio.to_thread(_entries, metas)
    repository: RemoteRepository = app.state.repository
    repository.set_entries(entries, hello.get("unversioned", []))
    timeout = app.state.settings.request_timeout_s
    runtimes: dict[tuple[str, int], RemoteRuntime] = {}
    for entry, meta in zip(entries, metas, strict=True):
        if entry.ready and entry.architecture is not None:
            app.state.metrics.set_model_info(
                entry.name, entry.version, entry.architecture, entry.metrics
            )
        if not (meta["serving"] and entry.ready):
            continue
        spec = None
        if entry.kind == "image":
            try:
                spec = ImageSpec.from_metadata(entry.input_spec, entry.preprocessing, entry.config)
            except ValueError as exc:  # the engine checked it: only a version skew gets here
                entry.mark_unavailable(INPUT_SPEC_INVALID, f"unusable input spec: {exc}")
                continue
        runtimes[(entry.name, entry.version)] = RemoteRuntime(
            entry, spec, app.state.engine, timeout
        )
    server: ServerState = app.state.server
    server.runtimes.clear()
    server.runtimes.update(runtimes)
    server.ready = True
    logger.info(
        "ready: %d model version(s) serving through the inference engine (pid %s)",
        len(runtimes),
        hello.get("pid"),
        extra={"ready": True},
    )


@asynccontextmanager
async def engine_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The lifespan of a worker in process mode. Start-up waits for the engine's ``HELLO``
    (as an inline worker waits for its models: a worker takes no connection it cannot serve)
    unless the engine process is gone; on shutdown it refuses new requests, waits for those
    in progress and disconnects."""
    client: EngineClient = app.state.engine
    client.start(lambda hello: _install(app, hello))
    logger.info("waiting for the inference engine at %s", client.path)
    server: ServerState = app.state.server
    while not server.ready and client.engine_alive():
        await asyncio.sleep(STARTUP_POLL_S)
    try:
        yield
    finally:
        server.stop()
        runtimes = list(server.runtimes.values())
        logger.info("shutting down: waiting for %d model version(s)' requests", len(runtimes))
        await asyncio.gather(*(r.drain() for r in runtimes))
        await client.close()
        logger.info("drained")
