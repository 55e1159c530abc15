"""Deadline-aware admission (app/serving/admission.py): drain rate, expected wait, shedding with a
computed Retry-After, recovery after a slow batch. Times are passed explicitly: no clock."""

from __future__ import annotations

import pytest

from app.serving.admission import (
    ADMIT_FRACTION,
    RATE_STEP,
    Admission,
    Deadline,
    Overloaded,
    QueueFull,
    Shed,
    retry_after,
)


def _busy(rate: float = 2.0, queued: int = 4, work: float = 0.5) -> Admission:
    """``queued`` items of ``work`` seconds waiting, one batch running since t = 0, drain rate
    ``rate``."""
    admission = Admission(prior=rate)
    for _ in range(queued):
        admission.enqueue(work)
    admission.start(work=1.0, now=0.0)
    return admission


def test_the_drain_rate_is_the_first_batch_then_a_smoothed_average() -> None:
    admission = Admission()
    assert admission.rate is None
    admission.start(work=3.0, now=10.0)
    admission.finish(now=11.0)
    assert admission.rate == pytest.approx(3.0)
    admission.start(work=1.0, now=20.0)
    admission.finish(now=21.0)  # a batch at 1 work-second per second
    assert admission.rate == pytest.approx(0.3 * 1.0 + 0.7 * 3.0)


def test_one_odd_batch_moves_the_rate_by_at_most_a_bounded_step() -> None:
    admission = Admission(prior=2.0)
    admission.start(work=0.1, now=0.0)
    admission.finish(now=100.0)  # a stall: 0.001 work-seconds per second
    assert admission.rate == pytest.approx(0.3 * 2.0 / RATE_STEP + 0.7 * 2.0)


def test_expected_wait_is_the_running_rest_plus_the_queue_over_the_rate() -> None:
    admission = _busy(rate=2.0, queued=4, work=0.5)
    # the running batch (1 s of work at 2/s = 0.5 s) started at 0; at 0.2 it has 0.3 s left
    assert admission.expected_wait(now=0.2, own_work=0.5) == pytest.approx(0.3 + 2.5 / 2.0)


def test_a_batch_past_its_expected_end_counts_its_overrun_again() -> None:
    admission = _busy(rate=2.0, queued=0)
    assert admission.running_left(now=0.5) == pytest.approx(0.0)
    assert admission.running_left(now=3.5) == pytest.approx(3.0)


def test_an_unknown_rate_admits_everything() -> None:
    admission = Admission()
    for _ in range(100):
        admission.enqueue(1.0)
    assert admission.expected_wait(now=0.0, own_work=1.0) is None
    admission.admit(0.0, Deadline(0.001, 0.001), 1.0, "m")  # no exception


def test_an_idle_model_admits_even_a_request_longer_than_its_deadline() -> None:
    admission = Admission(prior=0.01)
    admission.admit(0.0, Deadline(1.0, 1.0), 5.0, "m")  # no exception


def test_admitted_while_the_expected_wait_fits_the_deadline() -> None:
    admission = _busy(rate=2.0, queued=4, work=0.5)
    wait = admission.expected_wait(now=0.0, own_work=0.5)
    assert wait is not None
    admission.admit(0.0, Deadline(wait / ADMIT_FRACTION + 0.01, 10.0), 0.5, "m")


def test_shed_with_retry_after_from_the_drain_rate() -> None:
    admission = _busy(rate=2.0, queued=4, work=0.5)
    # expected wait 0.5 + 2.5 / 2 = 1.75 s; 1 s left, 0.5 s of it usable: 1.25 s too much
    with pytest.raises(Overloaded) as raised:
        admission.admit(0.0, Deadline(1.0, 1.0), 0.5, "m")
    assert raised.value.retry_after == 2
    assert "overloaded" in str(raised.value) and "4 request(s) queued" in str(raised.value)
    slower = _busy(rate=0.5, queued=4, work=0.5)  # 2 + 5 = 7 s expected, 0.5 s usable
    with pytest.raises(Overloaded) as raised:
        slower.admit(0.0, Deadline(1.0, 1.0), 0.5, "m")
    assert raised.value.retry_after == 7  # ⌈7 − 0.5⌉


def test_the_queue_drains_and_admits_again() -> None:
    admission = _busy(rate=2.0, queued=4, work=0.5)
    with pytest.raises(Overloaded):
        admission.admit(0.0, Deadline(1.0, 1.0), 0.5, "m")
    admission.finish(now=0.5)
    for _ in range(4):
        admission.dequeue(0.5)
    admission.admit(0.5, Deadline(1.5, 1.0), 0.5, "m")  # nothing queued, nothing running


def test_queue_full_retry_after_is_one_item_at_the_drain_rate() -> None:
    admission = _busy(rate=0.25, queued=3, work=1.0)  # running: 4 s expected
    assert admission.queue_full_retry(now=0.0) == retry_after(4.0 + 1.0 / 0.25)
    assert Admission().queue_full_retry(now=0.0) == 1


@pytest.mark.parametrize(("seconds", "expected"), [(0.0, 1), (0.2, 1), (1.01, 2), (7.0, 7)])
def test_retry_after_is_whole_seconds_and_at_least_one(seconds: float, expected: int) -> None:
    assert retry_after(seconds) == expected


def test_shed_errors_carry_their_retry_after() -> None:
    assert isinstance(QueueFull("x", 3), Shed) and QueueFull("x", 3).retry_after == 3
    assert Overloaded("x", 0).retry_after == 1


def test_a_deadline_knows_the_time_left() -> None:
    deadline = Deadline(at=10.0, seconds=2.0)
    assert deadline.left(now=9.5) == pytest.approx(0.5)
    assert deadline.left(now=11.0) == pytest.approx(-1.0)
    assert Deadline.after(3.0).left() == pytest.approx(3.0, abs=0.5)


def test_a_batch_whose_callers_all_left_does_not_move_the_rate() -> None:
    admission = Admission(prior=2.0)
    admission.start(work=1.0, now=0.0)
    admission.finish(now=50.0, measured=False)
    assert admission.rate == 2.0
    assert admission.running_left(now=50.0) == 0.0
