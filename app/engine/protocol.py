"""Messages between the HTTP workers and the engine process (one Unix-socket connection per
worker, requests multiplexed by id).

A frame is ``u32 body length`` then the body: ``u8 kind | u64 request id | u32 meta length |
meta | tensor data``. ``meta`` is a small UTF-8 JSON object (names, paths, timings, errors),
padded with spaces to a multiple of 8 bytes; tensors travel as raw bytes, never as JSON: meta
key ``"t"`` lists ``[dtype, shape]`` per tensor and their data follows in that order, each
padded to 8 bytes so every decoded tensor is aligned. Decoded tensors are views of the
received (writable) buffer; no further copy.

Batcher exceptions cross as ``ERROR`` messages (:func:`error_meta` / :func:`error_from_meta`)
and come back as the same exception types, so a worker answers exactly as inline serving does.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from app.core.errors import ApiError
from app.serving.batching import Overloaded, QueueFull, RequestTimeout, Shed, ShuttingDown
from models.molecule_features import MolGraph

HELLO = 1
"""engine → worker on connect: meta ``{"pid", "entries"}`` (see :mod:`app.engine.entries`)."""
CLASSIFY = 2
"""worker → engine: meta ``{"m": name, "v": version, "p": path, "d": seconds left to the
request's deadline, "s": seconds the request was given}``, tensors ``[image]``."""
PREDICT = 3
"""worker → engine: meta ``{"m", "v", "p", "d", "s"}``, tensors x, edge_index, edge_attr per
graph."""
RESULT = 4
"""engine → worker: meta ``{"i": inference seconds}``, tensors ``[outputs]``."""
ERROR = 5
"""engine → worker: meta from :func:`error_meta`."""
CANCEL = 6
"""worker → engine: the caller of request ``id`` gave up."""
METRICS = 7
"""worker → engine: asks for the engine's metric families."""
METRICS_TEXT = 8
"""engine → worker: meta ``{"text": Prometheus exposition}``."""
EXPLAIN = 9
"""worker → engine: meta ``{"m", "v", "p", "s": steps, "c": target or null}``, tensors
``[image]`` or one graph's x, edge_index, edge_attr; answered ``RESULT`` with meta
``{"i", "c": explained output}`` and tensors contributions, outputs, baseline outputs."""
KINDS = frozenset(range(HELLO, EXPLAIN + 1))

_LENGTH = struct.Struct("!I")
_BODY = struct.Struct("!BQI")
ALIGN = 8
MAX_FRAME_BYTES = 1 << 31
DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    )
}
_DTYPE_NAMES = {d: n for n, d in DTYPES.items()}


@dataclass(eq=False)
class Message:
    kind: int
    rid: int
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: list[torch.Tensor] = field(default_factory=list)


def _pad(size: int) -> int:
    return -size % ALIGN


def encode(
    kind: int,
    rid: int,
    meta: Mapping[str, Any] | None = None,
    tensors: Sequence[torch.Tensor] = (),
) -> bytes:
    """One frame. Tensors must be on the CPU and of a dtype in :data:`DTYPES`; ValueError
    otherwise."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind}")
    document = dict(meta or {})
    buffers: list[Any] = []
    if tensors:
        specs = []
        for t in tensors:
            if t.device.type != "cpu":
                raise ValueError(f"tensors must be on the CPU, got one on {t.device}")
            name = _DTYPE_NAMES.get(t.dtype)
            if name is None:
                raise ValueError(f"dtype {t.dtype} cannot be sent to the engine")
            t = t.detach().contiguous()
            specs.append([name, list(t.shape)])
            data = t.reshape(-1).view(torch.uint8).numpy()
            buffers += [data, bytes(_pad(data.nbytes))]
        document["t"] = specs
    head = json.dumps(document, separators=(",", ":")).encode()
    head += b" " * _pad(_BODY.size + len(head))
    size = _BODY.size + len(head) + sum(memoryview(b).nbytes for b in buffers)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"message of {size} bytes exceeds {MAX_FRAME_BYTES}")
    return b"".join([_LENGTH.pack(size), _BODY.pack(kind, rid, len(head)), head, *buffers])


def decode(body: bytearray) -> Message:
    """The message of one frame body (the frame without its length prefix); tensors are views
    of ``body``. ValueError for a malformed body."""
    if len(body) < _BODY.size:
        raise ValueError(f"frame of {len(body)} bytes is shorter than its header")
    kind, rid, head_size = _BODY.unpack_from(body)
    offset = _BODY.size + head_size
    if kind not in KINDS or offset > len(body):
        raise ValueError(f"malformed frame header (kind {kind}, meta {head_size} bytes)")
    try:
        meta = json.loads(body[_BODY.size : offset])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"frame meta is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError("frame meta is not a JSON object")
    tensors = []
    for spec in meta.pop("t", ()):
        dtype_name, shape = spec
        dtype = DTYPES.get(dtype_name)
        if dtype is None or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"bad tensor spec {spec!r}")
        count = math.prod(shape)
        size = count * dtype.itemsize
        if offset + size > len(body):
            raise ValueError(f"frame ends inside a tensor of shape {shape}")
        if count:
            t = torch.frombuffer(body, dtype=dtype, count=count, offset=offset).view(shape)
        else:
            t = torch.empty(shape, dtype=dtype)
        tensors.append(t)
        offset += size + _pad(size)
    if offset != len(body):
        raise ValueError(f"frame has {len(body) - offset} unexpected trailing bytes")
    return Message(kind, rid, meta, tensors)


async def read_message(reader: asyncio.StreamReader) -> Message:
    """The next message; IncompleteReadError at the end of the stream, ValueError for a
    malformed frame."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    return decode(bytearray(await reader.readexactly(size)))


def graph_tensors(graphs: Sequence[MolGraph]) -> list[torch.Tensor]:
    """x, edge_index, edge_attr of every graph, in order."""
    return [t for g in graphs for t in (g.x, g.edge_index, g.edge_attr)]


def graphs_from_tensors(tensors: Sequence[torch.Tensor]) -> list[MolGraph]:
    """Inverse of :func:`graph_tensors`; ValueError unless there are three tensors per graph."""
    if len(tensors) % 3 or not tensors:
        raise ValueError(f"expected three tensors per graph, got {len(tensors)} tensors")
    return [MolGraph(*tensors[i : i + 3]) for i in range(0, len(tensors), 3)]


class EngineInternalError(RuntimeError):
    """An unexpected error in the engine (answered 500 like any unhandled error)."""


def error_meta(exc: BaseException) -> dict[str, Any]:
    """The ``ERROR`` meta of a batcher or model exception. The batcher's errors cross as
    their own types (members of the :class:`ApiError` family too, checked first), every other
    member of the family as its status, message and headers."""
    for name, cls in _BATCHER_ERRORS.items():
        if isinstance(exc, cls):
            meta = {"type": name, "message": str(exc)}
            if isinstance(exc, Shed):
                meta["retry_after"] = exc.retry_after
            return meta
    if isinstance(exc, ApiError):  # InferenceFailed and every other answer with a status
        return {
            "type": "api",
            "status": exc.status_code,
            "message": exc.message,
            "headers": exc.headers,
        }
    return {"type": "internal", "message": f"{type(exc).__name__}: {exc}"}


def error_from_meta(meta: Mapping[str, Any]) -> Exception:
    """The exception an ``ERROR`` meta stands for (the type :func:`error_meta` was given, or
    an :class:`ApiError` with the same status, message and headers)."""
    kind, message = meta.get("type"), str(meta.get("message", ""))
    if kind == "api":
        return ApiError(int(meta["status"]), message, meta.get("headers") or {})
    cls = _BATCHER_ERRORS.get(str(kind))
    if cls is not None and issubclass(cls, Shed):
        return cls(message, int(meta.get("retry_after", 1)))
    if cls is not None:
        return cls(message)
    return EngineInternalError(message)


_BATCHER_ERRORS: dict[str, type[Exception]] = {
    "overloaded": Overloaded,
    "queue_full": QueueFull,
    "shutting_down": ShuttingDown,
    "timeout": RequestTimeout,
}
