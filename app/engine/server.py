"""The engine process: the one process that owns the models and batches the requests of every
HTTP worker (``PLSTM_ENGINE=process``; started by ``plstm serve``, see
:mod:`app.engine.launcher`).

It loads the repository exactly as an inline worker does
(:func:`app.serving.repository.build_repository`, warm-up,
:func:`app.serving.inference.build_runtimes`), so batching, timeouts, queue limits and per-item
failures are those of :class:`app.serving.batching.Batcher`, now shared by all workers. Then it
listens on a Unix socket (:mod:`app.engine.protocol`): each worker holds one connection, gets the
entries' metadata first (``HELLO``), then sends requests multiplexed by id; each request is one task
that submits to the model's batcher and answers ``RESULT`` or ``ERROR``.

Life cycle: SIGINT is ignored (a terminal's Ctrl-C reaches every process of the group; the
parent stops the engine after its workers). On SIGTERM the engine keeps serving until every
worker has disconnected (workers drain first; at most ``request_timeout_s`` + 10 s), then it
drains: no new connections, queued and running batches finish and are answered, new requests
get :class:`~app.serving.batching.ShuttingDown`. If its parent process disappears it drains at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from app.core.errors import ApiError, unavailable
from app.core.memory import limit_malloc_arenas
from app.core.metrics import Metrics
from app.core.settings import Settings, get_settings
from app.engine.entries import entry_meta
from app.engine.protocol import (
    CANCEL,
    CLASSIFY,
    ERROR,
    EXPLAIN,
    HELLO,
    METRICS,
    METRICS_TEXT,
    PREDICT,
    RESULT,
    Message,
    encode,
    error_meta,
    graphs_from_tensors,
    read_message,
)
from app.serving.batching import Deadline
from app.serving.explanations import Explainers, ExplainRequest
from app.serving.inference import ModelRuntime, build_runtimes
from app.serving.model_thread import run_on_model_thread
from app.serving.repository import ModelRepository, build_repository

logger = logging.getLogger("app.engine.server")  # also when run as __main__

PARENT_POLL_S = 0.5
DISCONNECT_GRACE_S = 10.0
"""Added to ``request_timeout_s``: how long a SIGTERM waits for the workers to disconnect."""
_EXPECTED = ApiError
"""Answers, not faults: the error family (shedding, draining, timeouts included)."""


class _Connection:
    """One worker's connection and its requests in progress (by request id)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.tasks: dict[int, asyncio.Task] = {}
        self.requests = 0

    def send(self, frame: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame)


class EngineServer:
    """Serves ``runtimes`` to worker connections on a Unix socket; ``hello`` is the meta of
    the ``HELLO`` message, ``metrics`` the registry the runtimes record into."""

    def __init__(
        self,
        runtimes: Mapping[tuple[str, int], ModelRuntime],
        hello: dict[str, Any],
        metrics: Metrics,
    ) -> None:
        self.runtimes = runtimes
        self.hello = hello
        self.metrics = metrics
        self.explainers = Explainers()
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def connections(self) -> int:
        """Workers connected now."""
        return len(self._connections)

    async def start(self, path: str) -> None:
        """Listen on the Unix socket ``path``."""
        self._server = await asyncio.start_unix_server(self._serve, path=path)

    async def wait_disconnected(self) -> None:
        """Until no worker is connected."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop accepting workers, drain every batcher (answering what was queued), then close
        the connections."""
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(r.batcher.drain() for r in self.runtimes.values()))
        await self.explainers.drain()
        while tasks := [t for c in self._connections for t in c.tasks.values()]:
            await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self._connections):
            conn.writer.close()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer)
        self._connections.add(conn)
        self._idle.clear()
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        logger.info("worker connected (%d connection(s))", len(self._connections))
        try:
            conn.send(encode(HELLO, 0, self.hello))
            while True:
                self._dispatch(conn, await read_message(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ValueError as exc:
            logger.error("closing a worker connection after a malformed message: %s", exc)
        finally:
            for task in conn.tasks.values():
                task.cancel()  # the worker is gone: its queued items are abandoned
            self._connections.discard(conn)
            if not self._connections:
                self._idle.set()
            writer.close()
            self._handlers.discard(handler)  # type: ignore[arg-type]
            logger.info(
                "worker disconnected after %d request(s) (%d connection(s) left)",
                conn.requests,
                len(self._connections),
                extra={"worker_requests": conn.requests},
            )

    def _dispatch(self, conn: _Connection, msg: Message) -> None:
        if msg.kind in (CLASSIFY, PREDICT, EXPLAIN):
            conn.requests += 1
            task = asyncio.create_task(self._infer(conn, msg))
            conn.tasks[msg.rid] = task
            task.add_done_callback(lambda _, rid=msg.rid: conn.tasks.pop(rid, None))
        elif msg.kind == CANCEL:
            task = conn.tasks.get(msg.rid)
            if task is not None:
                task.cancel()
        elif msg.kind == METRICS:
            text = self.metrics.render_engine().decode()
            conn.send(encode(METRICS_TEXT, msg.rid, {"text": text}))
        else:
            raise ValueError(f"unexpected message kind {msg.kind} from a worker")

    async def _infer(self, conn: _Connection, msg: Message) -> None:
        try:
            name, version, path = msg.meta["m"], msg.meta["v"], msg.meta["p"]
            left = msg.meta.get("d")
            deadline = None
            if left is not None:
                total = float(msg.meta.get("s", left))
                deadline = Deadline(time.perf_counter() + float(left), total)
            runtime = self.runtimes.get((name, version))
            if runtime is None:
                raise unavailable(f"model {name!r} version {version} is not served by the engine")
            if msg.kind == EXPLAIN:
                reply = await answer_explain_message(self.explainers, runtime, msg)
            else:
                if msg.kind == CLASSIFY:
                    (image,) = msg.tensors
                    outcome = await runtime.classify(image, path, deadline)
                else:
                    graphs = graphs_from_tensors(msg.tensors)
                    outcome = await runtime.predict(graphs, path, deadline)
                reply = encode(RESULT, msg.rid, {"i": outcome.inference_s}, [outcome.outputs])
        except Exception as exc:
            if not isinstance(exc, _EXPECTED):
                logger.error("request failed in the inference engine", exc_info=exc)
            reply = encode(ERROR, msg.rid, error_meta(exc))
        conn.send(reply)


def hello_meta(
    repository: ModelRepository, runtimes: Mapping[tuple[str, int], ModelRuntime]
) -> dict[str, Any]:
    """The ``HELLO`` meta: this process id, every entry (:func:`entry_meta`, with its cost
    profile) and the models without versions."""
    entries = [entry_meta(e, (e.name, e.version) in runtimes) for e in repository.entries()]
    return {"pid": os.getpid(), "entries": entries, "unversioned": repository.unversioned()}


async def open_engine(
    repository: ModelRepository, settings: Settings, socket_path: str
) -> EngineServer:
    """A runtime per READY version of the loaded ``repository`` (as inline serving builds
    them, recording into a fresh :class:`Metrics`), served on ``socket_path``."""
    metrics = Metrics()
    runtimes = build_runtimes(repository, settings, metrics)
    server = EngineServer(runtimes, hello_meta(repository, runtimes), metrics)
    await server.start(socket_path)
    return server


async def serve_engine(
    repository: ModelRepository, settings: Settings, socket_path: str, ready_fd: int | None = None
) -> int:
    """Serve the loaded ``repository`` on ``socket_path`` until stopped (module docstring);
    writes ``ready`` to ``ready_fd`` once listening. Returns the exit status."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await open_engine(repository, settings, socket_path)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    logger.info(
        "inference engine ready: %d model version(s) serving on %s",
        len(server.runtimes),
        socket_path,
        extra={"ready": True},
    )
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PARENT_POLL_S)
    if stop.is_set():
        logger.info("stopping: waiting for %d worker(s) to disconnect", server.connections)
        grace = settings.request_timeout_s + DISCONNECT_GRACE_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_disconnected(), grace)
    else:
        logger.error("the server process is gone: stopping the inference engine")
    logger.info("inference engine draining")
    await server.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    logger.info("inference engine drained")
    return 0


async def answer_explain_message(
    explainers: Explainers, runtime: ModelRuntime, msg: Message
) -> bytes:
    """The engine's ``RESULT`` frame for the ``EXPLAIN`` message ``msg`` (the exceptions of
    :meth:`Explainer.explain` propagate)."""
    if runtime.entry.kind == "image":
        (item,) = msg.tensors
    else:
        (item,) = graphs_from_tensors(msg.tensors)
    target = msg.meta.get("c")
    request = ExplainRequest(
        input=item,
        path=str(msg.meta["p"]),
        steps=int(msg.meta["s"]),
        target=None if target is None else int(target),
    )
    explained = await explainers.get(runtime).explain(request)
    meta = {"i": explained.inference_s, "c": explained.target}
    tensors = [explained.contributions, explained.outputs, explained.baseline_outputs]
    return encode(RESULT, msg.rid, meta, tensors)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app.engine.server --socket PATH [--ready-fd FD]``; settings from ``PLSTM_*``."""
    parser = argparse.ArgumentParser(prog="python -m app.engine.server", description=__doc__)
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--ready-fd", type=int, help="file descriptor to write 'ready' to")
    args = parser.parse_args(argv)
    limit_malloc_arenas()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from app.core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    repository = build_repository(settings)
    logger.info("inference engine loading model repository %s", repository.path)
    run_on_model_thread(repository.load_all)
    coroutine = serve_engine(repository, settings, args.socket, args.ready_fd)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


if __name__ == "__main__":
    sys.exit(main())
