"""The decoder process of :mod:`app.serving.decoder_pool`: ``python -m app.serving.decoder_worker``.

Reads calls from stdin and writes their results to stdout, each a frame of an 8-byte
big-endian length and a pickle. A call is ``(function, args)``, ``function`` being one of
:data:`ALLOWED_MODULES`' functions (pickled by reference, possibly in a ``functools.partial``);
a result is ``("ok", value)``, ``("error", exception)`` for the ValueErrors that describe a bad
request, or ``("failed", traceback)``. It exits when stdin closes, i.e. when the server
process is gone. Modules are imported on the first call that needs them, so a worker that only
decodes JSON never loads torch or RDKit.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import traceback
from functools import partial
from typing import BinaryIO

HEADER = struct.Struct("!Q")
ALLOWED_MODULES = ("app.api.body_decoding", "app.api.molecules")


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's payload; None at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _answer(call: bytes) -> bytes:
    function, args = pickle.loads(call)
    target = function.func if isinstance(function, partial) else function
    if getattr(target, "__module__", None) not in ALLOWED_MODULES:
        raise ValueError(f"refusing to run {function!r}")
    try:
        result: tuple[str, object] = ("ok", function(*args))
    except ValueError as exc:  # the decoders' errors about the request (BodyError, ...)
        result = ("error", exc)
    try:
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: send its text
        return pickle.dumps(("error", ValueError(str(result[1]))))


def serve(calls: BinaryIO, results: BinaryIO) -> None:
    """Answer every call of ``calls`` on ``results`` until ``calls`` ends."""
    while (call := read_frame(calls)) is not None:
        try:
            answer = _answer(call)
        except Exception:  # a fault of this process: report it, keep serving
            answer = pickle.dumps(("failed", traceback.format_exc()))
        write_frame(results, answer)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which closes stdin
    results = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints cannot corrupt frames
    serve(sys.stdin.buffer, results)


if __name__ == "__main__":
    main()
