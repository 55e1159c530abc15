"""Dynamic batching on asyncio: requests with the same group key run as one model call.

``fn(group_key, items) -> results`` is a blocking function run in a worker thread (one batch
at a time per batcher, so a model is never called concurrently by it); it returns one result
per item, where an item's result may be an exception instance, which is raised to that item's
caller only. If ``fn`` itself raises, every caller of the batch gets that exception.

A batch closes when it holds ``max_batch_size`` items or ``max_delay_ms`` after its first item
arrived, whichever comes first; if the worker is still running a batch at that time, the batch
stays open (filling up to ``max_batch_size``) until the worker is free, so under load batches
grow instead of queueing up as many small ones. At most ``max_queue_size`` items wait (not yet
running); beyond that :meth:`Batcher.submit` raises :class:`QueueFull`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.metrics import Metrics


class QueueFull(Exception):
    """The queue holds ``max_queue_size`` waiting items (answer 503 with Retry-After)."""


class ShuttingDown(Exception):
    """The batcher is draining and accepts nothing new (answer 503)."""


class RequestTimeout(asyncio.TimeoutError):
    """The item's result did not arrive within its timeout (answer 504)."""


@dataclass(eq=False)
class _Item:
    value: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: bool = False


BatchFn = Callable[[Hashable, list[Any]], Sequence[Any]]


class Batcher:
    """Collects items per group key into batches and runs ``fn`` on them off the event loop.

    ``timeout_s`` is the default per-request timeout of :meth:`submit` (None: wait forever).
    With ``metrics`` and ``model``, queue depth, queue time and batch sizes are recorded
    under that model name. Create and use it from one event loop.
    """

    def __init__(
        self,
        fn: BatchFn,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue_size: int,
        *,
        timeout_s: float | None = None,
        metrics: Metrics | None = None,
        model: str = "",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
        if max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be positive, got {max_queue_size}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.model = model
        self._open: dict[Hashable, list[_Item]] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._due: dict[Hashable, None] = {}  # past their delay, waiting for a free worker
        self._ready: asyncio.Queue[tuple[Hashable, list[_Item]]] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{model}")
        self._depth = 0
        self._running = 0
        self._closing = False
        self._idle: asyncio.Event | None = None

    @property
    def queue_depth(self) -> int:
        """Items waiting (submitted, their batch not started)."""
        return self._depth

    @property
    def closing(self) -> bool:
        return self._closing

    async def submit(self, item: Any, group_key: Hashable, timeout: float | None = None) -> Any:
        """Queue ``item`` and return its result (or raise its exception). ``timeout``
        (seconds; default the batcher's ``timeout_s``) covers queueing and running.
        Raises :class:`ShuttingDown`, :class:`QueueFull` or :class:`RequestTimeout`."""
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self._depth >= self.max_queue_size:
            raise QueueFull(f"queue of model {self.model!r} is full ({self.max_queue_size})")
        self._start()
        loop = asyncio.get_running_loop()
        pending = _Item(item, loop.create_future())
        batch = self._open.setdefault(group_key, [])
        batch.append(pending)
        self._set_depth(self._depth + 1)
        if len(batch) >= self.max_batch_size:
            self._close(group_key)
        elif len(batch) == 1:
            self._timers[group_key] = loop.call_later(self.max_delay, self._delay_over, group_key)
        timeout = self.timeout_s if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        except TimeoutError:
            self._abandon(group_key, pending)
            raise RequestTimeout(f"no result within {timeout:g} s") from None
        except asyncio.CancelledError:
            self._abandon(group_key, pending)
            raise

    async def drain(self) -> None:
        """Stop accepting items (:class:`ShuttingDown`), run everything queued or running,
        then stop the worker thread."""
        self._closing = True
        for key in list(self._open):
            self._close(key)
        if self._worker is not None:
            assert self._idle is not None
            while self._depth or self._running:
                self._idle.clear()
                await self._idle.wait()
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    def _start(self) -> None:
        if self._worker is None:
            self._ready = asyncio.Queue()
            self._idle = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work())

    def _set_depth(self, depth: int) -> None:
        self._depth = depth
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.model).set(depth)
        if self._idle is not None and depth == 0 and not self._running:
            self._idle.set()

    def _delay_over(self, key: Hashable) -> None:
        """The batch of ``key`` waited ``max_delay``: close it, or, while the worker runs a
        batch, mark it due (the worker closes it when that batch is done)."""
        self._timers.pop(key, None)
        if self._running:
            self._due[key] = None
        else:
            self._close(key)

    def _close(self, key: Hashable) -> None:
        """Move the open batch of ``key`` to the ready queue."""
        self._due.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self._open.pop(key, None)
        if batch:
            assert self._ready is not None
            self._ready.put_nowait((key, batch))

    def _abandon(self, key: Hashable, pending: _Item) -> None:
        """The caller gave up: drop its item if it has not started, ignore its result if it has."""
        if not pending.started:
            batch = self._open.get(key)
            if batch is not None and pending in batch:
                batch.remove(pending)
                if not batch:
                    self._close(key)
            pending.started = True  # a closed batch still holding it will skip it
            self._set_depth(self._depth - 1)
        if not pending.future.done():
            pending.future.cancel()

    async def _work(self) -> None:
        assert self._ready is not None
        loop = asyncio.get_running_loop()
        while True:
            for due in list(self._due):
                self._close(due)
            key, batch = await self._ready.get()
            batch = [p for p in batch if not p.started]
            if not batch:
                continue
            now = time.perf_counter()
            for p in batch:
                p.started = True
            self._running += 1
            self._set_depth(self._depth - len(batch))
            if self.metrics is not None:
                self.metrics.batch_size.labels(self.model).observe(len(batch))
                for p in batch:
                    self.metrics.queue_duration.labels(self.model).observe(now - p.enqueued)
            try:
                results = await loop.run_in_executor(
                    self._executor, self._call, key, [p.value for p in batch]
                )
            except Exception as exc:
                results = [exc] * len(batch)
            finally:
                self._running -= 1
            for p, result in zip(batch, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(result, BaseException):
                    p.future.set_exception(result)
                else:
                    p.future.set_result(result)
            self._set_depth(self._depth)

    def _call(self, key: Hashable, values: list[Any]) -> list[Any]:
        results = list(self.fn(key, values))
        if len(results) != len(values):
            raise RuntimeError(
                f"batch function returned {len(results)} results for {len(values)} items"
            )
        return results
