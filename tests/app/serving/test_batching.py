"""Dynamic batcher: batching, routing, failure isolation, queue limit, timeout, drain; deadline
shedding, dropping expired and abandoned work, batches bounded by size (a fake model function)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass

import pytest

from app.core.metrics import Metrics
from app.serving.batching import (
    Batcher,
    Deadline,
    Overloaded,
    QueueFull,
    RequestTimeout,
    ShuttingDown,
)


class Recorder:
    """A batch function that records its calls and returns 10·x (or an error for negatives)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[object, list[int]]] = []
        self.threads: set[int] = set()
        self.delay = delay
        self.release = threading.Event()
        self.release.set()

    def __call__(self, key: object, items: list[int]) -> list[object]:
        self.threads.add(threading.get_ident())
        self.calls.append((key, list(items)))
        self.release.wait(5)
        time.sleep(self.delay)
        return [ValueError(f"item {x} is negative") if x < 0 else 10 * x for x in items]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_submits_are_batched_and_routed() -> None:
    fn = Recorder()
    metrics = Metrics(cuda=False)

    async def main() -> list[int]:
        batcher = Batcher(fn, 4, 50, 100, metrics=metrics, model="m")
        rng = random.Random(0)
        values = [rng.randrange(1, 1000) for _ in range(10)]
        results = await asyncio.gather(*(batcher.submit(v, "k") for v in values))
        await batcher.drain()
        return values, results

    values, results = run(main())
    assert results == [10 * v for v in values]
    assert [len(items) for _, items in fn.calls] == [4, 4, 2]
    assert [x for _, items in fn.calls for x in items] == values
    assert threading.get_ident() not in fn.threads  # off the event loop
    registry = metrics.registry
    assert registry.get_sample_value("plstm_batch_size_count", {"model": "m"}) == 3
    assert registry.get_sample_value("plstm_batch_size_sum", {"model": "m"}) == 10
    assert registry.get_sample_value("plstm_queue_duration_seconds_count", {"model": "m"}) == 10
    assert registry.get_sample_value("plstm_queue_depth", {"model": "m"}) == 0


def test_groups_are_batched_separately() -> None:
    fn = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(fn, 8, 20, 100)
        keys = ["a", "b", "a", "b", "a"]
        results = await asyncio.gather(*(batcher.submit(i, k) for i, k in enumerate(keys)))
        await batcher.drain()
        return results

    assert run(main()) == [0, 10, 20, 30, 40]
    assert sorted(fn.calls, key=lambda c: c[0]) == [("a", [0, 2, 4]), ("b", [1, 3])]


def test_max_delay_closes_a_partial_batch() -> None:
    fn = Recorder()

    async def main() -> tuple[int, float]:
        batcher = Batcher(fn, 64, 30, 100)
        start = time.perf_counter()
        first = await batcher.submit(3, "k")
        elapsed = time.perf_counter() - start
        second = await batcher.submit(4, "k")
        await batcher.drain()
        return first + second, elapsed

    total, elapsed = run(main())
    assert total == 70 and 0.025 <= elapsed < 1.0
    assert [items for _, items in fn.calls] == [[3], [4]]


def test_one_bad_item_fails_alone() -> None:
    fn = Recorder()

    async def main() -> list[object]:
        batcher = Batcher(fn, 8, 20, 100)
        out = await asyncio.gather(
            *(batcher.submit(v, "k") for v in (1, -2, 3)), return_exceptions=True
        )
        await batcher.drain()
        return out

    first, second, third = run(main())
    assert (first, third) == (10, 30)
    assert isinstance(second, ValueError) and str(second) == "item -2 is negative"
    assert len(fn.calls) == 1


def test_failing_batch_function_reaches_every_caller() -> None:
    def broken(key: object, items: list[int]) -> list[int]:
        raise RuntimeError("device lost")

    def short(key: object, items: list[int]) -> list[int]:
        return items[:1]

    async def main(fn) -> list[object]:
        batcher = Batcher(fn, 8, 10, 100)
        out = await asyncio.gather(*(batcher.submit(v, 0) for v in (1, 2)), return_exceptions=True)
        await batcher.drain()
        return out

    assert [str(e) for e in run(main(broken))] == ["device lost", "device lost"]
    errors = run(main(short))
    assert all(isinstance(e, RuntimeError) and "1 results for 2 items" in str(e) for e in errors)


def test_queue_full() -> None:
    fn = Recorder()
    fn.release.clear()  # the first batch blocks in the worker

    async def main() -> None:
        batcher = Batcher(fn, 2, 200, 3)
        running = [asyncio.ensure_future(batcher.submit(v, "k")) for v in (1, 2)]
        await asyncio.sleep(0.05)  # batch [1, 2] closed (full) and running
        waiting = [asyncio.ensure_future(batcher.submit(v, "k")) for v in (3, 4, 5)]
        await asyncio.sleep(0)
        assert batcher.queue_depth == 3
        with pytest.raises(QueueFull, match="full"):
            await batcher.submit(6, "k")
        fn.release.set()
        assert await asyncio.gather(*running, *waiting) == [10, 20, 30, 40, 50]
        assert await batcher.submit(6, "k") == 60  # room again
        await batcher.drain()

    run(main())


def test_batch_keeps_filling_past_its_delay_while_the_worker_is_busy() -> None:
    fn = Recorder()
    fn.release.clear()

    async def main() -> list[int]:
        batcher = Batcher(fn, 8, 1, 100)
        first = asyncio.ensure_future(batcher.submit(1, "k"))
        while not fn.calls:  # [1] runs and holds the worker
            await asyncio.sleep(0.001)
        rest = []
        for v in (2, 3, 4):
            rest.append(asyncio.ensure_future(batcher.submit(v, "k")))
            await asyncio.sleep(0.01)  # each waits 10x the 1 ms delay
        assert batcher.queue_depth == 3 and len(fn.calls) == 1
        fn.release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.drain()
        return results

    assert run(main()) == [10, 20, 30, 40]
    assert [items for _, items in fn.calls] == [[1], [2, 3, 4]]  # one batch, not three


def test_timeout_frees_the_slot_and_others_still_succeed() -> None:
    fn = Recorder()
    fn.release.clear()

    async def main() -> None:
        batcher = Batcher(fn, 1, 0, 10, timeout_s=0.1)
        running = asyncio.ensure_future(batcher.submit(1, "k"))
        await asyncio.sleep(0.02)
        with pytest.raises(Overloaded) as info:
            await batcher.submit(2, "k")  # queued behind the blocked batch: shed unrun
        assert "could not be answered within its deadline of 0.1 s" in str(info.value)
        assert batcher.queue_depth == 0
        fn.release.set()
        assert await batcher.submit(3, "k", timeout=5) == 30
        with pytest.raises(RequestTimeout) as late:
            await running  # its own batch ran too long
        assert isinstance(late.value, asyncio.TimeoutError)
        await batcher.drain()

    run(main())
    assert [items for _, items in fn.calls] == [[1], [3]]  # the timed-out item never ran


def test_drain_finishes_in_flight_and_refuses_new() -> None:
    fn = Recorder(delay=0.05)

    async def main() -> list[int]:
        batcher = Batcher(fn, 2, 1000, 100)
        pending = [asyncio.ensure_future(batcher.submit(v, "k")) for v in (1, 2, 3)]
        await asyncio.sleep(0.01)  # [1, 2] running; [3] waits for its 1 s delay
        start = time.perf_counter()
        await batcher.drain()
        assert time.perf_counter() - start < 0.9  # drain does not wait out the delay
        assert all(p.done() for p in pending)
        with pytest.raises(ShuttingDown):
            await batcher.submit(4, "k")
        return [p.result() for p in pending]

    assert run(main()) == [10, 20, 30]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(Recorder(), 0, 5, 10)
    with pytest.raises(ValueError, match="max_queue_size"):
        Batcher(Recorder(), 4, 5, 0)


async def _until_running(fn: Recorder, calls: int = 1) -> None:
    while len(fn.calls) < calls:
        await asyncio.sleep(0.001)


def test_an_expected_wait_past_the_deadline_is_shed_with_a_computed_retry_after() -> None:
    fn = Recorder()
    fn.release.clear()

    async def main() -> None:
        # items of 2 s predicted work, 9 s deadlines (4.5 s usable), drain rate 1 s/s
        batcher = Batcher(fn, 1, 0, 100, timeout_s=9.0, drain_prior=1.0)
        running = asyncio.ensure_future(batcher.submit(1, "k", work=2.0))
        await _until_running(fn)
        queued = asyncio.ensure_future(batcher.submit(2, "k", work=2.0))  # waits ~4 s: fits
        await asyncio.sleep(0)
        assert batcher.queue_depth == 1
        with pytest.raises(Overloaded) as shed:  # would wait ~6 s
            await batcher.submit(3, "k", work=2.0)
        assert shed.value.retry_after == 2  # ⌈6 − 4.5⌉ s at the drain rate
        assert batcher.queue_depth == 1
        fn.release.set()
        assert await asyncio.gather(running, queued) == [10, 20]
        await batcher.drain()

    run(main())
    assert [items for _, items in fn.calls] == [[1], [2]]


def test_the_shed_retry_after_follows_the_measured_drain_rate() -> None:
    fn = Recorder(delay=0.2)

    async def main() -> tuple[int, float]:
        batcher = Batcher(fn, 1, 0, 100, timeout_s=60.0)  # work: 1 per item
        await batcher.submit(0, "k")  # measures the rate: 1 item per 0.2 s or longer
        rate = batcher.admission.rate
        assert rate is not None and rate <= 5.0
        fn.release.clear()
        queued = [asyncio.ensure_future(batcher.submit(v, "k")) for v in range(1, 11)]
        await _until_running(fn, 2)
        with pytest.raises(Overloaded) as shed:
            await batcher.submit(11, "k", deadline=Deadline.after(1.0))
        fn.release.set()
        await asyncio.gather(*queued)
        await batcher.drain()
        return shed.value.retry_after, rate

    retry, rate = run(main())
    # ~10 items (9 queued, 1 running, and its own) at the measured rate, less 0.5 s usable
    assert retry >= 2
    assert abs(retry - (10 / rate - 0.5)) <= 1.5


def test_an_item_past_its_deadline_is_dropped_before_it_runs() -> None:
    fn = Recorder()
    fn.release.clear()

    async def main() -> None:
        batcher = Batcher(fn, 1, 0, 10, timeout_s=30.0)
        running = asyncio.ensure_future(batcher.submit(1, "k"))
        await _until_running(fn)
        with pytest.raises(Overloaded, match=r"within its deadline of 0\.1 s"):
            await batcher.submit(2, "k", deadline=Deadline.after(0.1))
        fn.release.set()
        assert await running == 10
        assert await batcher.submit(3, "k") == 30
        await batcher.drain()

    run(main())
    assert [items for _, items in fn.calls] == [[1], [3]]


def test_an_item_whose_caller_went_away_is_dropped_before_it_runs() -> None:
    fn = Recorder()
    fn.release.clear()

    async def main() -> None:
        batcher = Batcher(fn, 1, 0, 10, timeout_s=30.0)
        running = asyncio.ensure_future(batcher.submit(1, "k"))
        await _until_running(fn)
        gone = asyncio.ensure_future(batcher.submit(2, "k"))
        await asyncio.sleep(0.01)
        gone.cancel()  # e.g. the client disconnected
        await asyncio.gather(gone, return_exceptions=True)
        assert batcher.queue_depth == 0
        fn.release.set()
        assert await running == 10
        await batcher.drain()

    run(main())
    assert [items for _, items in fn.calls] == [[1]]


def test_a_batch_without_callers_is_flagged_for_cancellation() -> None:
    seen: list[bool] = []
    entered = threading.Event()

    def fn(key: object, items: list[int]) -> list[int]:
        entered.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not batcher.cancel_requested:
            time.sleep(0.001)
        seen.append(batcher.cancel_requested)
        return [10 * x for x in items]

    async def main() -> None:
        running = [asyncio.ensure_future(batcher.submit(v, "k")) for v in (1, 2)]
        await asyncio.to_thread(entered.wait, 5)
        running[0].cancel()
        await asyncio.sleep(0.05)
        assert not batcher.cancel_requested  # item 2's caller still waits
        running[1].cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await batcher.drain()
        assert not batcher.cancel_requested  # reset once the batch ended

    batcher = Batcher(fn, 2, 1, 10, timeout_s=30.0)
    run(main())
    assert seen == [True]


@dataclass(frozen=True)
class Units:
    n: int

    def join(self, other: Units) -> Units:
        return Units(self.n + other.n)


def test_a_batch_closes_before_it_grows_too_large_for_one_call() -> None:
    fn = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(fn, 8, 50, 100, fits=lambda key, size: size.n <= 3)
        sizes = [1, 1, 1, 1, 2, 1]
        results = await asyncio.gather(
            *(batcher.submit(i, "k", size=Units(n)) for i, n in enumerate(sizes))
        )
        await batcher.drain()
        return results

    assert run(main()) == [0, 10, 20, 30, 40, 50]
    assert [items for _, items in fn.calls] == [[0, 1, 2], [3, 4], [5]]


def test_a_slow_batch_sheds_later_requests_and_the_model_recovers_when_it_ends() -> None:
    fn = Recorder()
    fn.release.clear()

    async def main() -> None:
        batcher = Batcher(fn, 1, 0, 10, timeout_s=30.0, drain_prior=1.0)
        slow = asyncio.ensure_future(batcher.submit(1, "k", work=0.05))  # runs far longer
        await _until_running(fn)
        await asyncio.sleep(0.6)  # 0.55 s past its expected end: ~0.55 s more expected
        start = time.perf_counter()
        with pytest.raises(Overloaded):
            await batcher.submit(2, "k", deadline=Deadline.after(0.5), work=0.05)
        assert time.perf_counter() - start < 0.1  # at once, not after the deadline
        fn.release.set()
        assert await slow == 10
        assert await batcher.submit(3, "k", deadline=Deadline.after(0.5), work=0.05) == 30
        await batcher.drain()

    run(main())
    assert [items for _, items in fn.calls] == [[1], [3]]
