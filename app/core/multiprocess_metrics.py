"""The metric files shared by the worker processes of ``plstm serve --workers N``.

Each uvicorn worker is its own process with its own registry, and a scrape of ``/metrics``
reaches whichever worker accepts the connection. So that every scrape sees the whole server,
``plstm serve`` points prometheus_client's multiprocess mode (:data:`MULTIPROCESS_ENV`) at a
fresh private directory before the workers start; each worker writes its series there and
:meth:`app.core.metrics.Metrics.render` sums the files of all of them. This module imports nothing
heavy: it runs in the server's supervising process.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client.multiprocess import mark_process_dead

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where the workers' metric files go; prometheus_client reads it once, when it is imported,
so it must be set before a worker process starts."""


@contextlib.contextmanager
def worker_metrics_directory(workers: int) -> Iterator[str | None]:
    """With more than one worker: a new empty directory exported as :data:`MULTIPROCESS_ENV`
    (replacing any inherited value, whose stale files would be summed in), removed afterwards;
    yields its path. With one worker the variable is cleared and None is yielded."""
    previous = os.environ.pop(MULTIPROCESS_ENV, None)
    directory = tempfile.mkdtemp(prefix="plstm-metrics-") if workers > 1 else None
    try:
        if directory is not None:
            os.environ[MULTIPROCESS_ENV] = directory
        yield directory
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        if previous is not None:
            os.environ[MULTIPROCESS_ENV] = previous
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def forget_dead_workers(directory: str) -> list[int]:
    """Drop the live-gauge files (in-flight requests, queue depth, GPU memory) of processes
    that no longer exist, so a worker that crashed mid-request does not count forever; its
    counters and histograms stay (they must not go back). Returns the pids forgotten."""
    dead = []
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = path.rsplit("_", 1)[1].removesuffix(".db")
        if pid.isdigit() and not _alive(int(pid)):
            dead.append(int(pid))
    for pid in sorted(set(dead)):
        mark_process_dead(pid, directory)
    return sorted(set(dead))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
