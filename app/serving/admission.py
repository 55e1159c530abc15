"""Deadline-aware admission for one batcher: what is queued and running, how fast it drains,
and whether a new request can still be answered before its deadline.

Each queued item carries its *work*: its predicted time alone on its path in seconds
(:mod:`app.serving.cost_profile`), or 1 per item when the model's time is not calibrated. The drain
rate is the work finished per second of running, measured on every batch and smoothed
(:data:`RATE_SMOOTHING`, one batch moving it by at most a factor :data:`RATE_STEP`); batching
makes it exceed 1 s/s, a busier machine or a cost model that underestimates makes it fall.

The expected wait of a new item is the rest of the running batch, plus the queued work divided
by that rate, plus the run of its own batch: its own work at that rate or, when batches are
larger, the smoothed duration of the recent batches (an item answers when its whole batch is
done, and under load later arrivals fill that batch), plus the event loop's lag (the smoothed
delay between a result being ready and its caller resuming, which grows when the loop is busy
with arrivals): ``wait = running_left + queued / rate + max(own / rate, batch) + lag``.
The rest of the running batch is its expected duration minus its elapsed time, or, once it
overruns, the overrun so far (a batch running long is assumed to run that much longer again),
so a slow batch makes later requests shed at once instead of queueing behind it.

An item is admitted when ``wait <= ADMIT_FRACTION · time left``, or when nothing is queued or
running: an idle model always takes a request (whether a request is too large for its deadline
on its own is the question of the cost limits, :mod:`app.serving.cost_limits`), so the server
recovers as soon as a slow batch ends. Otherwise :class:`Overloaded` carries
``Retry-After = ⌈wait − ADMIT_FRACTION · time left⌉``: the seconds until, at the measured rate,
enough work has drained for this request to fit. Until the first batch is measured, a model
without calibrated times admits everything (only the queue size limits it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from app.core.errors import ApiError

ADMIT_FRACTION = 0.5
"""Share of the time left to a deadline that the expected wait may fill: the rest absorbs the
error of the estimate (the drain rate of a busy machine swings by tens of percent within
seconds, and answering takes event-loop time the rate does not see), so admitted requests are
answered in time instead of timing out after using the model."""
RATE_SMOOTHING = 0.3
"""Weight of the latest batch in the drain rate."""
RATE_STEP = 4.0
"""A batch's own rate counts as at most this factor above or below the current drain rate, so
one odd batch (a stall, an input the cost model misjudged) cannot swing the estimate."""


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered: ``at`` in ``time.perf_counter()`` seconds, and the
    ``seconds`` it was given in all."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """``seconds`` from now."""
        return cls(time.perf_counter() + seconds, seconds)

    def left(self, now: float | None = None) -> float:
        """Seconds from ``now`` (default: now) to the deadline; negative once it passed."""
        return self.at - (time.perf_counter() if now is None else now)


class Shed(ApiError):
    """A request refused for load (503 ``server busy: ...``); ``retry_after`` in whole seconds
    (at least 1), sent as ``Retry-After``. ``str()`` is the reason without the prefix."""

    status_code = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        self.retry_after = max(1, int(retry_after))
        headers = {"Retry-After": str(self.retry_after)}
        super().__init__(self.status_code, f"server busy: {message}", headers)
        self.args = (message,)


class QueueFull(Shed):
    """The queue holds ``max_queue_size`` waiting items."""


class Overloaded(Shed):
    """The expected wait is longer than the time left to the request's deadline."""


def _smooth(average: float, sample: float) -> float:
    return RATE_SMOOTHING * sample + (1 - RATE_SMOOTHING) * average


def retry_after(seconds: float) -> int:
    """Whole seconds, at least 1."""
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) else 1


class Admission:
    """The work of one batcher: queued, running, and the measured drain rate. ``prior``: the
    drain rate assumed before any batch is measured (None: unknown, admit everything)."""

    def __init__(self, prior: float | None = None) -> None:
        self.rate = prior
        self.batch_seconds = 0.0
        self.lag = 0.0
        self.queued_work = 0.0
        self.queued_items = 0
        self._running_work: float | None = None
        self._running_start = 0.0

    def enqueue(self, work: float) -> None:
        self.queued_work += work
        self.queued_items += 1

    def dequeue(self, work: float) -> None:
        """An item left the queue (its batch started, or it was abandoned)."""
        self.queued_items -= 1
        self.queued_work = max(0.0, self.queued_work - work) if self.queued_items else 0.0

    def start(self, work: float, now: float) -> None:
        """A batch of ``work`` starts running at ``now``."""
        self._running_work, self._running_start = work, now

    def finish(self, now: float, measured: bool = True) -> None:
        """The running batch ended at ``now``: fold its rate into the drain rate, unless not
        ``measured`` (a batch all of whose callers had gone: whatever made them give up, a stall
        or an input the cost model misjudged, says little about the rest of the queue)."""
        work, elapsed = self._running_work, now - self._running_start
        self._running_work = None
        if work is None or elapsed <= 0 or not measured:
            return
        self.batch_seconds = _smooth(self.batch_seconds, elapsed) if self.batch_seconds else elapsed
        sample = work / elapsed
        if self.rate is None:
            self.rate = sample
            return
        sample = min(max(sample, self.rate / RATE_STEP), self.rate * RATE_STEP)
        self.rate = _smooth(self.rate, sample)

    def observe_lag(self, seconds: float) -> None:
        """A caller resumed ``seconds`` after its result was ready."""
        self.lag = _smooth(self.lag, max(0.0, seconds))

    def running_left(self, now: float) -> float:
        """Expected seconds until the running batch ends (module docstring); 0 when idle."""
        if self._running_work is None or self.rate is None:
            return 0.0
        return abs(self._running_work / self.rate - (now - self._running_start))

    def expected_wait(self, now: float, own_work: float) -> float | None:
        """Seconds until an item of ``own_work`` queued now is answered; None while the drain
        rate is unknown."""
        if self.rate is None:
            return None
        own = max(own_work / self.rate, self.batch_seconds)
        return self.running_left(now) + self.queued_work / self.rate + own + self.lag

    def admit(self, now: float, deadline: Deadline | None, own_work: float, model: str) -> None:
        """Raise :class:`Overloaded` when an item of ``own_work`` queued now is not expected
        to be answered within :data:`ADMIT_FRACTION` of the time left to ``deadline``."""
        if deadline is None or (not self.queued_items and self._running_work is None):
            return
        wait = self.expected_wait(now, own_work)
        left = deadline.left(now)
        budget = ADMIT_FRACTION * left
        if wait is None or wait <= budget:
            return
        raise Overloaded(
            f"model {model!r} is overloaded: the expected wait of ~{wait:.2g} s "
            f"({self.queued_items} request(s) queued, draining at the measured rate) is over the "
            f"{left:.2g} s left to the request's deadline",
            retry_after(wait - budget),
        )

    def queue_full_retry(self, now: float) -> int:
        """Seconds until, at the measured rate, one queued item has left the queue."""
        if self.rate is None or not self.queued_items:
            return 1
        per_item = self.queued_work / self.queued_items / self.rate
        return retry_after(self.running_left(now) + per_item)
