"""The one thread of a process that runs the models on the CPU.

ATen's intra-op parallelism on the CPU is OpenMP (libgomp): every thread that starts a parallel
region gets a team of helper threads of its own. Once a process holds more of them than it has
cores, libgomp stops spinning between regions and puts them to sleep, so each of the thousands
of parallel regions of a forward pays for waking them. On the 2-core development machine with 2
torch threads, a 96 px pLSTM-Vis-T forward of the shipped arrow model took 28.8 ms on the thread
that had loaded it and 53 ms on a second thread; the solubility model on one small molecule
3.2 ms and 7.6 ms. So every model call of a process on the CPU (loading and warm-up, cost
calibration, the batches of every model, explanations) runs on this one thread, and the process
has one team.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def model_executor() -> ThreadPoolExecutor:
    """This process's model thread (started on first use; shared, never shut down)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        return _executor


def run_on_model_thread(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` on the model thread, waiting for it (from any other thread)."""
    return model_executor().submit(function, *args).result()


async def on_model_thread(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` on the model thread, awaited without blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(model_executor(), function, *args)
