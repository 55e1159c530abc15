"""CPU-heavy request decoding in worker processes, so the event loop never waits for it.

Parsing JSON, validating it with pydantic and sanitizing / ranking molecules with RDKit each
hold the GIL for the whole of one call: in a worker thread a 15 MB body or a large ring system
would still stall the event loop (health checks included) for that long. Such work runs in a
small pool of decoder processes (``python -m app.serving.decoder_worker``), started when first
needed and shared by every app of this process; small bodies and small molecules, whose decoding
takes well under a millisecond, stay in this process (:func:`decode_body`, :func:`run_heavy`).

The processes talk through pipes (:mod:`app.serving.decoder_worker`): the call goes in as a pickle
of the function (by reference) and its arguments, the validated result comes back as a pickle of
compact values (numpy arrays, tensors, small pydantic models), so this process never spends
time on the large intermediate objects. A worker that dies (killed for memory, crashed) fails
only the calls it was running (503) and is replaced on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from app.core.errors import ApiError
from app.serving.decoder_worker import read_frame, write_frame

logger = logging.getLogger(__name__)

T = TypeVar("T")

INLINE_BODY_BYTES = 64 * 1024
"""Bodies up to this size are decoded in the server process (a few milliseconds at most)."""
WORKERS = max(1, min(4, (os.cpu_count() or 2) // 2))
"""Decoder processes: half the CPU cores (1 to 4), leaving the rest to the models."""
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


class DecoderFailed(ApiError):
    """A decoder process died or failed while decoding a request (HTTP 503)."""

    status_code = 503

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, message)


class _Worker:
    """One decoder process and its pipes (blocking I/O: used from worker threads)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.serving.decoder_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def call(self, payload: bytes) -> bytes:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            write_frame(self.process.stdin, payload)
            answer = read_frame(self.process.stdout)
        except OSError:
            answer = None
        if answer is None:
            code = self.process.poll()
            self.close()
            raise DecoderFailed(
                f"the decoder process failed on this request (exit status {code}); a new one "
                "takes the next request"
            )
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # unflushed bytes to a dead process
                    stream.close()


class DecoderPool:
    """Up to ``workers`` decoder processes; :meth:`run` calls a function in one of them."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter]
        self._limiters = weakref.WeakKeyDictionary()

    def _limiter(self) -> CapacityLimiter:
        """Per event loop: at most ``workers`` calls hold a thread (the others wait without
        one, so waiting decodes never starve other thread-pool work)."""
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = CapacityLimiter(self.workers)
        return limiter

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker()

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._idle) < self.workers:
                self._idle.append(worker)
                return
        worker.close()

    def _call(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        payload = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        worker = self._take()
        answer = worker.call(payload)
        self._give_back(worker)
        status, value = pickle.loads(answer)
        if status == "ok":
            return value
        if status == "error":
            raise value
        logger.error("decoder process failed on %s:\n%s", function.__name__, value)
        raise DecoderFailed(f"decoding failed in the decoder process ({function.__name__})")

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a decoder process; its ValueErrors are raised here."""
        return await anyio.to_thread.run_sync(self._call, function, args, limiter=self._limiter())


_pool = DecoderPool()


def decoder_pool() -> DecoderPool:
    """The decoder processes of this server process."""
    return _pool


async def run_heavy(function: Callable[..., T], *args: Any, heavy: bool) -> T:
    """``function(*args)`` in a decoder process when ``heavy``, else in a worker thread."""
    if heavy:
        return await _pool.run(function, *args)
    return await anyio.to_thread.run_sync(function, *args)


async def decode_body(function: Callable[..., T], body: bytes, *args: Any) -> T:
    """``function(body, *args)``: in a decoder process for bodies over
    :data:`INLINE_BODY_BYTES`, else right here on the event loop."""
    if len(body) > INLINE_BODY_BYTES:
        return await _pool.run(function, body, *args)
    return function(body, *args)
