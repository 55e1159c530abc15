"""``plstm serve`` (also ``python -m app.cli serve``): run the model server with uvicorn.

Flags override the ``PLSTM_*`` environment variables (they are written into the environment
before the server starts, so every worker process sees them); everything else comes from the
environment (:class:`app.core.settings.Settings`). uvicorn runs the hardened HTTP protocol of
:mod:`app.api.http_protocol` (header limits, read and idle timeouts, a connection limit); on SIGTERM
each worker drains (:mod:`app.serving.draining`: new requests get 503 while those in flight finish)
before uvicorn stops it. In process mode (``--engine``, see
:mod:`app.engine.launcher`) the engine process is started before uvicorn and stopped after it;
with several workers their metrics are summed through shared files
(:mod:`app.core.multiprocess_metrics`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from fastapi import FastAPI
from pydantic import ValidationError

from app.core.settings import LOG_LEVELS, Settings, get_settings
from app.serving.draining import drain_timeout_s

FLAG_SETTINGS = ("host", "port", "workers", "engine", "model_repository", "device", "log_level")
HTTP_PROTOCOL = "app.api.http_protocol:HardenedHttpToolsProtocol"


def build_parser(prog: str = "python -m app.cli") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="pLSTM model server.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the models of a model repository over HTTP",
        description="Serve every model under the model repository (/v1 friendly API, /v2 Open "
        "Inference Protocol, /metrics). Flags override the PLSTM_* environment variables.",
    )
    serve.add_argument("--host", help="bind address (PLSTM_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="TCP port (PLSTM_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (PLSTM_WORKERS, default 1)")
    serve.add_argument(
        "--engine",
        choices=("auto", "inline", "process"),
        help="where the models run (PLSTM_ENGINE): inline = every worker loads every model and "
        "batches its own requests; process = one engine process loads the models and batches "
        "the requests of all workers; auto (default) = process when workers > 1, else inline",
    )
    serve.add_argument(
        "--model-repository",
        help="directory of <model>/<version>/ checkpoints (PLSTM_MODEL_REPOSITORY)",
    )
    serve.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help="where models run (PLSTM_DEVICE)"
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="log level (PLSTM_LOG_LEVEL)")
    return parser


def create_logged_app() -> FastAPI:
    """The uvicorn app factory: JSON logging, then :func:`app.main.create_app`."""
    from app.core.logging import configure_logging
    from app.engine.launcher import PID_ENV, SOCKET_ENV
    from app.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level)
    pid = os.environ.get(PID_ENV, "")
    return create_app(
        settings,
        engine_socket=os.environ.get(SOCKET_ENV) or None,
        engine_pid=int(pid) if pid.isdigit() else None,
        drain_on_signals=True,
    )


def serve(args: argparse.Namespace) -> int:
    for key in FLAG_SETTINGS:
        value = getattr(args, key)
        if value is not None:
            os.environ[f"PLSTM_{key.upper()}"] = str(value)
    get_settings.cache_clear()
    try:
        settings: Settings = get_settings()
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    if not settings.model_repository.is_dir():
        print(f"model repository {settings.model_repository} is not a directory", file=sys.stderr)
        return 2
    import uvicorn

    from app.core.logging import configure_logging
    from app.core.multiprocess_metrics import worker_metrics_directory
    from app.engine.launcher import PID_ENV, SOCKET_ENV, EngineProcess, engine_mode

    configure_logging(settings.log_level)
    os.environ.pop(SOCKET_ENV, None)
    os.environ.pop(PID_ENV, None)
    engine = EngineProcess(settings) if engine_mode(settings) == "process" else None
    # uvicorn re-raises the signal that stopped it once shutdown is done; with the default
    # handler that would end the process as "killed by SIGTERM" after a clean drain
    stopped_by: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopped_by.append(signum))
    with worker_metrics_directory(settings.workers):
        try:
            if engine is not None:
                engine.start()
            uvicorn.run(
                "app.cli:create_logged_app",
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=settings.workers,
                log_level=settings.log_level,
                log_config=None,
                access_log=False,
                http=HTTP_PROTOCOL,
                ws="none",
                timeout_keep_alive=settings.keep_alive_timeout_s,
                limit_concurrency=settings.max_connections,
                timeout_graceful_shutdown=drain_timeout_s(settings),
            )
        finally:
            if engine is not None:
                engine.stop()  # after the workers: they drained their requests through it
    return 1 if engine is not None and engine.failed else 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m app.cli") -> int:
    """Entry point; ``argv`` starts with the subcommand (``serve``). Returns the exit status."""
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else list(argv))
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
