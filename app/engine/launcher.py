"""The engine process of ``plstm serve`` (``PLSTM_ENGINE``): choosing the mode, starting it
before uvicorn, watching it, stopping it after the workers.

The engine (``python -m app.engine.server``) listens on a Unix socket in a private temporary
directory (mode 0700) whose path reaches the workers through :data:`SOCKET_ENV` (its process
id through :data:`PID_ENV`). It reports ``ready`` through a pipe once listening. If it exits
before that (a fatal start-up error) the server is stopped and ``plstm serve`` exits 1; if it
dies later the workers answer 503 and ``plstm serve`` exits 1 when it stops. This module
imports nothing heavy: it runs in the server's supervising process.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from app.core.multiprocess_metrics import MULTIPROCESS_ENV
from app.core.settings import Settings

logger = logging.getLogger(__name__)

SOCKET_ENV = "PLSTM_ENGINE_SOCKET"
"""Environment variable naming the engine's socket; when set, workers serve in process mode."""
PID_ENV = "PLSTM_ENGINE_PID"
"""Environment variable with the engine's process id (workers stop waiting for a dead one)."""
STOP_GRACE_S = 15.0
"""Added to ``request_timeout_s``: how long a stopped engine may take to drain before SIGKILL."""
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def engine_mode(settings: Settings) -> str:
    """``"inline"`` or ``"process"``: ``settings.engine``, where ``auto`` means process when
    there is more than one worker."""
    if settings.engine == "auto":
        return "process" if settings.workers > 1 else "inline"
    return settings.engine


class EngineProcess:
    """One engine subprocess for ``settings`` (read from the ``PLSTM_*`` environment by the
    engine itself). :meth:`start` before uvicorn, :meth:`stop` after it; ``failed`` tells
    whether it exited without being asked to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = False
        self.failed = False
        self.directory: Path | None = None
        self.socket_path: str | None = None
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Spawn the engine and export its socket path (:data:`SOCKET_ENV`) to the workers."""
        self.directory = Path(tempfile.mkdtemp(prefix="plstm-engine-"))
        self.socket_path = str(self.directory / "engine.sock")
        env = dict(os.environ)
        # the engine renders its own families for the workers' /metrics (Metrics.render_engine);
        # in the workers' shared files they would be exposed twice
        env.pop(MULTIPROCESS_ENV, None)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p
        )
        read_fd, write_fd = os.pipe()
        try:
            command = [sys.executable, "-m", "app.engine.server", "--socket", self.socket_path]
            command += ["--ready-fd", str(write_fd)]
            self.process = subprocess.Popen(command, env=env, pass_fds=(write_fd,))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.environ[SOCKET_ENV] = self.socket_path
        os.environ[PID_ENV] = str(self.process.pid)
        logger.info("inference engine started (pid %d)", self.process.pid)
        self._watcher = threading.Thread(
            target=self._watch, args=(read_fd,), name="engine-watch", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        """SIGTERM the engine (it drains once its workers are gone), SIGKILL it after
        ``request_timeout_s`` + :data:`STOP_GRACE_S`, remove the socket directory."""
        self._stopping.set()
        os.environ.pop(SOCKET_ENV, None)
        os.environ.pop(PID_ENV, None)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.settings.request_timeout_s + STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.error("the inference engine did not stop in time: killing it")
                self.process.kill()
                self.process.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _watch(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            self.ready = pipe.read().startswith(b"ready")
        assert self.process is not None
        status = self.process.wait()
        if self._stopping.is_set():
            return
        # 0: it drained after a SIGTERM from outside (sent to the whole group, say): the
        # server stops too
        self.failed = status not in (0, -signal.SIGTERM)
        if self.ready:
            logger.error("the inference engine exited (status %s): inference answers 503", status)
            return
        if not self.failed:
            return
        logger.error("the inference engine failed to start (status %s): stopping", status)
        # repeated: a signal that arrives before uvicorn installs its handlers would be lost
        while not self._stopping.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            self._stopping.wait(1.0)
