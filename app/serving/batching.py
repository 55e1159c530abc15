"""Dynamic batching on asyncio: requests with the same group key run as one model call.

``fn(group_key, items) -> results`` is a blocking function run in a worker thread (one batch
at a time per batcher, so a model is never called concurrently by it); it returns one result
per item, where an item's result may be an exception instance, which is raised to that item's
caller only. If ``fn`` itself raises, every caller of the batch gets that exception.

A batch closes when it holds ``max_batch_size`` items or ``max_delay_ms`` after its first item
arrived, whichever comes first; if the worker is still running a batch at that time, the batch
stays open (filling up to ``max_batch_size``) until the worker is free, so under load batches
grow instead of queueing up as many small ones. At most ``max_queue_size`` items wait (not yet
running); beyond that :meth:`Batcher.submit` raises :class:`QueueFull`. With ``fits``, an item
that would make its open batch too large for one call (e.g. its predicted memory) closes it and
opens the next.

Deadlines (:mod:`app.serving.admission`): every item has one (``deadline``, or ``timeout`` / the
batcher's ``timeout_s`` from now) and a predicted ``work``. :meth:`Batcher.submit` refuses an
item at once with :class:`Overloaded` (Retry-After from the measured drain rate) when it is not
expected to be answered in time. An item that has not started when its deadline passes, or whose
batch starts too late for it to finish in time at the measured rate, is dropped before it runs
and its caller gets :class:`Overloaded` too (it was shed, later); an item whose caller went away
(cancelled) is dropped silently. Only an item whose batch ran past its deadline gets
:class:`RequestTimeout`. When every caller of the running batch has gone,
:attr:`Batcher.cancel_requested` turns true so the batch function may stop early
(:class:`app.serving.inference.ModelRuntime` checks it between blocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import RETRY_AFTER_S, ApiError
from app.core.metrics import Metrics
from app.serving.admission import (
    ADMIT_FRACTION,
    Admission,
    Deadline,
    Overloaded,
    QueueFull,
    Shed,
    retry_after,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Batcher",
    "Deadline",
    "Overloaded",
    "QueueFull",
    "RequestTimeout",
    "Shed",
    "ShuttingDown",
]


class ShuttingDown(ApiError):
    """The batcher is draining and accepts nothing new (answer 503 with Retry-After)."""

    status_code = 503

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, message, {"Retry-After": str(RETRY_AFTER_S)})


class RequestTimeout(ApiError, asyncio.TimeoutError):
    """The item's result did not arrive within its timeout (answer 504 ``request timed out:
    ...``). ``str()`` is the reason without the prefix."""

    status_code = 504

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, f"request timed out: {message}")
        self.args = (message,)


@dataclass(eq=False)
class _Item:
    value: Any
    future: asyncio.Future
    deadline: Deadline | None = None
    work: float = 1.0
    size: Any = None
    enqueued: float = field(default_factory=time.perf_counter)
    started: bool = False
    finished: float = 0.0


BatchFn = Callable[[Hashable, list[Any]], Sequence[Any]]
FitsFn = Callable[[Hashable, Any], bool]


class Batcher:
    """Collects items per group key into batches and runs ``fn`` on them off the event loop.

    ``timeout_s`` is the default per-request timeout of :meth:`submit` (None: wait forever).
    With ``metrics`` and ``model``, queue depth, queue time and batch sizes are recorded
    under that model name. ``fits(key, size)``: whether items whose joined ``size`` is
    ``size`` may run as one call (sizes join with ``a.join(b)``). ``drain_prior``: the drain
    rate (work per second) assumed before the first batch is measured; give 1.0 when the
    items' work is their predicted seconds. ``executor``: the one-thread executor ``fn`` runs
    on, shared with others (:mod:`app.serving.model_thread`) and left running at :meth:`drain`;
    default: a thread of its own. Create and use it from one event loop.
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
        fits: FitsFn | None = None,
        drain_prior: float | None = None,
        executor: ThreadPoolExecutor | None = None,
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
        self.fits = fits
        self.admission = Admission(drain_prior)
        self._open: dict[Hashable, list[_Item]] = {}
        self._open_size: dict[Hashable, Any] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._due: dict[Hashable, None] = {}  # past their delay, waiting for a free worker
        self._ready: asyncio.Queue[tuple[Hashable, list[_Item]]] | None = None
        self._worker: asyncio.Task | None = None
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"batch-{model}"
        )
        self._depth = 0
        self._running = 0
        self._closing = False
        self._idle: asyncio.Event | None = None
        self._running_items: list[_Item] = []
        self._cancel = threading.Event()

    @property
    def queue_depth(self) -> int:
        """Items waiting (submitted, their batch not started)."""
        return self._depth

    @property
    def closing(self) -> bool:
        return self._closing

    def admit(self, deadline: Deadline | None) -> None:
        """Raise what :meth:`submit` would for a new item of no work: :class:`ShuttingDown`,
        :class:`QueueFull` or :class:`Overloaded` (a cheap check before decoding a request)."""
        self._refuse(time.perf_counter(), deadline, 0.0)

    def _refuse(self, now: float, deadline: Deadline | None, work: float) -> None:
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self._depth >= self.max_queue_size:
            raise QueueFull(
                f"queue of model {self.model!r} is full ({self.max_queue_size})",
                self.admission.queue_full_retry(now),
            )
        self.admission.admit(now, deadline, work, self.model)

    @property
    def cancel_requested(self) -> bool:
        """True while the running batch has no caller left (thread-safe; read by ``fn``)."""
        return self._cancel.is_set()

    async def submit(
        self,
        item: Any,
        group_key: Hashable,
        timeout: float | None = None,
        *,
        deadline: Deadline | None = None,
        work: float | None = None,
        size: Any = None,
    ) -> Any:
        """Queue ``item`` and return its result (or raise its exception). ``deadline``, or
        else ``timeout`` (seconds from now; default the batcher's ``timeout_s``), covers
        queueing and running; ``work``: the item's predicted seconds (default 1); ``size``:
        its size for ``fits``. Raises :class:`ShuttingDown`, :class:`QueueFull`,
        :class:`Overloaded` or :class:`RequestTimeout`."""
        now = time.perf_counter()
        if deadline is None:
            timeout = self.timeout_s if timeout is None else timeout
            deadline = None if timeout is None else Deadline(now + timeout, timeout)
        work = 1.0 if work is None else float(work)
        self._refuse(now, deadline, work)
        self._start()
        loop = asyncio.get_running_loop()
        pending = _Item(item, loop.create_future(), deadline, work, size, enqueued=now)
        batch = self._join(group_key, pending)
        self._set_depth(self._depth + 1)
        self.admission.enqueue(work)
        if len(batch) >= self.max_batch_size:
            self._close(group_key)
        elif len(batch) == 1:
            self._timers[group_key] = loop.call_later(self.max_delay, self._delay_over, group_key)
        try:
            if deadline is None:
                result = await asyncio.shield(pending.future)
            else:
                result = await asyncio.wait_for(
                    asyncio.shield(pending.future), max(0.0, deadline.left())
                )
            self.admission.observe_lag(time.perf_counter() - pending.finished)
            return result
        except TimeoutError:
            started = pending.started
            self._abandon(group_key, pending)
            if not started:
                raise self._shed_late(pending, time.perf_counter()) from None
            raise RequestTimeout(f"no result within {deadline.seconds:g} s") from None
        except asyncio.CancelledError:
            self._abandon(group_key, pending)
            raise

    def _join(self, key: Hashable, pending: _Item) -> list[_Item]:
        """Add ``pending`` to the open batch of ``key``, first closing that batch when the
        item would make it too large for one call (``fits``)."""
        batch = self._open.get(key)
        current = self._open_size.get(key)
        if batch and self.fits is not None and pending.size is not None and current is not None:
            joined = current.join(pending.size)
            if not self.fits(key, joined):
                self._close(key)
            else:
                self._open_size[key] = joined
        batch = self._open.setdefault(key, [])
        if not batch:
            self._open_size[key] = pending.size
        batch.append(pending)
        return batch

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
        if self._own_executor:
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
        self._open_size.pop(key, None)
        batch = self._open.pop(key, None)
        if batch:
            assert self._ready is not None
            self._ready.put_nowait((key, batch))

    def _abandon(self, key: Hashable, pending: _Item) -> None:
        """The caller gave up: drop its item if it has not started, ignore its result if it
        has (and flag the running batch for cancellation once none of its callers is left)."""
        if not pending.started:
            batch = self._open.get(key)
            if batch is not None and pending in batch:
                batch.remove(pending)
                if not batch:
                    self._close(key)
            pending.started = True  # a closed batch still holding it will skip it
            self._set_depth(self._depth - 1)
            self.admission.dequeue(pending.work)
        if not pending.future.done():
            pending.future.cancel()
        running = self._running_items
        if running and pending in running and all(p.future.done() for p in running):
            self._cancel.set()

    def _shed_late(self, pending: _Item, now: float) -> Overloaded:
        """The error of an item dropped unrun because the queue kept it past (or too close to)
        its deadline, with the Retry-After a new request like it would get now."""
        assert pending.deadline is not None
        wait = self.admission.expected_wait(now, pending.work)
        budget = ADMIT_FRACTION * pending.deadline.seconds
        return Overloaded(
            f"model {self.model!r} is overloaded: the request could not be answered within its "
            f"deadline of {pending.deadline.seconds:g} s and was dropped from the queue unrun",
            retry_after(wait - budget) if wait is not None else 1,
        )

    def _expire(self, batch: list[_Item], now: float) -> list[_Item]:
        """Drop the items of ``batch`` that are not expected to be answered by their deadline
        if the batch starts now (deadline passed, or less time left than the batch's expected
        duration at the drain rate over ``ADMIT_FRACTION``: the same margin as admission;
        their callers get :class:`Overloaded`); the others."""
        rate = self.admission.rate
        duration = sum(p.work for p in batch) / rate if rate else 0.0
        alive = []
        for p in batch:
            if p.deadline is not None and p.deadline.left(now) <= duration / ADMIT_FRACTION:
                p.started = True
                self._set_depth(self._depth - 1)
                self.admission.dequeue(p.work)
                if not p.future.done():
                    p.future.set_exception(self._shed_late(p, now))
            else:
                alive.append(p)
        return alive

    async def _work(self) -> None:
        assert self._ready is not None
        loop = asyncio.get_running_loop()
        while True:
            for due in list(self._due):
                self._close(due)
            key, batch = await self._ready.get()
            now = time.perf_counter()
            batch = self._expire([p for p in batch if not p.started], now)
            if not batch:
                continue
            for p in batch:
                p.started = True
                self.admission.dequeue(p.work)
            self._running += 1
            self._set_depth(self._depth - len(batch))
            if self.metrics is not None:
                self.metrics.batch_size.labels(self.model).observe(len(batch))
                for p in batch:
                    self.metrics.queue_duration.labels(self.model).observe(now - p.enqueued)
            self._running_items = batch
            self._cancel.clear()
            work = sum(p.work for p in batch)
            self.admission.start(work, now)
            try:
                results = await loop.run_in_executor(
                    self._executor, self._call, key, [p.value for p in batch]
                )
            except Exception as exc:
                results = [exc] * len(batch)
            finally:
                self._running -= 1
                self._running_items = []
                end = time.perf_counter()
                self.admission.finish(end, measured=not self._cancel.is_set())
                self._cancel.clear()
                logger.debug(
                    "model %s: batch of %d (%.3g s of work) ran %.3g s; drain rate %.3g, %d queued",
                    self.model,
                    len(batch),
                    work,
                    end - now,
                    self.admission.rate or 0.0,
                    self._depth,
                )
            for p, result in zip(batch, results, strict=True):
                p.finished = time.perf_counter()
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
